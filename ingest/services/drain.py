"""raw_events_drain: the safety net for lost publishes and crashed workers (Beat */5)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Q
from django.db.models.functions import Now

from amy import tracing
from ingest.models import RawEvent, RawEventState
from ingest.publish import publish_raw_event_nudges
from ingest.services.dead_letter import raw_events_dead_letter_stale

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrainResult:
    selected: int
    published: int
    dead_lettered: int


def _stuck(*, limit: int, window_seconds: int) -> list[tuple[int, str]]:
    stuck = Q(state=RawEventState.RECEIVED) | (
        Q(state=RawEventState.PROCESSING) & (Q(lease_until__isnull=True) | Q(lease_until__lt=Now()))
    )
    return list(
        RawEvent.objects.filter(stuck, queued_at__gte=Now() - timedelta(seconds=window_seconds))
        .order_by("queued_at", "id")
        .values_list("pk", "request_id")[:limit]
    )


def raw_event_list_stuck(*, limit: int, window_seconds: int) -> list[int]:
    """Ids to re-enqueue, oldest first: `received`, or `processing` whose lease ran out, queued
    within the window."""
    return [raw_event_id for raw_event_id, _ in _stuck(limit=limit, window_seconds=window_seconds)]


def raw_events_drain(*, limit: int, window_seconds: int) -> DrainResult:
    """Nudge the stuck rows, each with its own request id (so that the worker's side of exactly
    these events is found by it). The workers take every waiting row behind the first nudge they
    get, batch after batch, so one run is enough for a backlog larger than `limit`."""
    dead = raw_events_dead_letter_stale(older_than_seconds=window_seconds)
    stuck = _stuck(limit=limit, window_seconds=window_seconds)
    ids = [raw_event_id for raw_event_id, _ in stuck]
    published = publish_raw_event_nudges((i, request_id or None) for i, request_id in stuck) if stuck else 0
    if ids:
        logger.info("drain re-enqueued %d of %d stuck events", published, len(ids))
    tracing.info("drain_summary", selected=len(ids), published=published, dead_lettered=len(dead))
    return DrainResult(selected=len(ids), published=published, dead_lettered=len(dead))
