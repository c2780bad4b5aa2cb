"""raw_event_dead_letter: the end of the road for an event, visible in PostgreSQL (the DLQ)."""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial

from django.db import transaction
from django.db.models.functions import Now

from ingest.models import UNPROCESSED_STATES, RawEvent, RawEventState
from ingest.publish import publish_dead_letter_copy

logger = logging.getLogger(__name__)

_MAX_ERROR_LENGTH = 2000


def _dlq_message(raw_event: RawEvent) -> dict[str, object]:
    return {
        "raw_event_id": raw_event.pk,
        "event_type": raw_event.event_type,
        "terra_user_id": raw_event.terra_user_id,
        "process_error": raw_event.process_error,
        "attempts": raw_event.attempts,
        "request_id": raw_event.request_id,
        "dead_lettered_at": raw_event.dead_lettered_at.isoformat() if raw_event.dead_lettered_at else None,
    }


def raw_event_dead_letter(*, raw_event_id: int, error: str, attempts: int | None = None) -> bool:
    """Mark an unprocessed row `dead` with its error; a copy goes to terra-events-dlq after commit.

    With `attempts`, only the delivery that holds that count may do it (a stale one may not).
    Returns whether the row was dead-lettered.
    """
    rows = RawEvent.objects.filter(pk=raw_event_id, state__in=UNPROCESSED_STATES)
    if attempts is not None:
        rows = rows.filter(attempts=attempts)
    with transaction.atomic():
        updated = rows.update(
            state=RawEventState.DEAD,
            process_error=error[:_MAX_ERROR_LENGTH],
            dead_lettered_at=Now(),
            lease_until=None,
        )
        if updated:
            raw_event = RawEvent.objects.defer("payload").get(pk=raw_event_id)
            transaction.on_commit(partial(publish_dead_letter_copy, _dlq_message(raw_event)), robust=True)
    return bool(updated)


def raw_events_dead_letter_stale(*, older_than_seconds: int) -> list[int]:
    """Dead-letter `stale_unprocessed` every row still unprocessed long after it was queued."""
    with transaction.atomic():
        stale = list(
            RawEvent.objects.select_for_update(skip_locked=True)
            .defer("payload")
            .filter(state__in=UNPROCESSED_STATES, queued_at__lt=Now() - timedelta(seconds=older_than_seconds))
            .exclude(state=RawEventState.PROCESSING, lease_until__gte=Now())
        )
        ids = [raw_event.pk for raw_event in stale]
        if ids:
            RawEvent.objects.filter(pk__in=ids).update(
                state=RawEventState.DEAD, process_error="stale_unprocessed", dead_lettered_at=Now(), lease_until=None
            )
            for raw_event in RawEvent.objects.defer("payload").filter(pk__in=ids):
                transaction.on_commit(partial(publish_dead_letter_copy, _dlq_message(raw_event)), robust=True)
            logger.warning("dead-lettered %d stale unprocessed events", len(ids))
    return ids
