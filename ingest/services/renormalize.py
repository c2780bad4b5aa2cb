"""raw_event_renormalize: re-run a stored ledger row through today's normalizers (after a parser
fix), idempotently. It is why we keep the ledger.

Only data events are re-run (the typed tables are derived from them); lifecycle events are state
transitions in time (re-running an old `auth` would reactivate a connection deauthorized since)
and `s3_payload` rows point at links that have expired. Rows a worker holds (`received`,
`processing`) are left to it. Nothing is published and no backfill is requested: a renormalize
writes rows and row states, nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from django.db import transaction
from django.db.models import Q, QuerySet

from ingest.errors import BadData
from ingest.models import UNPROCESSED_STATES, RawEvent, TerraConnection
from ingest.normalizers import DATA_TYPES, normalizer_for
from ingest.normalizers.base import WriteStats
from ingest.services.processing import event_context, raw_event_mark

logger = logging.getLogger(__name__)

RENORMALIZED_TYPES = tuple(t for t in DATA_TYPES if t != "s3_payload")


@dataclass
class RenormalizeSummary:
    events: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    written: WriteStats = field(default_factory=WriteStats)


def raw_events_to_renormalize(
    *, event_type: str | None = None, since: date | None = None, user_id: str | None = None
) -> QuerySet[RawEvent]:
    rows = RawEvent.objects.filter(event_type__in=RENORMALIZED_TYPES).exclude(state__in=UNPROCESSED_STATES)
    rows = rows.exclude(payload__isnull=True)
    if event_type:
        rows = rows.filter(event_type=event_type)
    if since:
        rows = rows.filter(received_at__date__gte=since)
    if user_id:
        terra_user_ids = TerraConnection.objects.filter(user_id=user_id).values("terra_user_id")
        rows = rows.filter(Q(user_id=user_id) | Q(terra_user_id__in=terra_user_ids))
    return rows.order_by("id")


def raw_event_renormalize(*, raw_event_id: int, dry_run: bool = False) -> tuple[str, WriteStats]:
    """Re-run one row; return its new state and what it wrote. Raises BadData, changing nothing."""
    with transaction.atomic():
        raw_event = RawEvent.objects.select_for_update(skip_locked=True).filter(pk=raw_event_id).first()
        if raw_event is None or raw_event.state in UNPROCESSED_STATES or raw_event.payload is None:
            return "not_renormalized", WriteStats()
        outcome = normalizer_for(raw_event.event_type)(event_context(raw_event))
        raw_event_mark(raw_event, outcome)
        if dry_run:
            transaction.set_rollback(True)
    return outcome.state, outcome.written


def raw_events_renormalize(
    rows: QuerySet[RawEvent], *, dry_run: bool = False, on_each: Callable[[int], object] | None = None
) -> RenormalizeSummary:
    """Re-run every row of `rows` in ledger order; `on_each(1)` after each (a progress bar)."""
    summary = RenormalizeSummary()
    for raw_event_id in rows.values_list("pk", flat=True).iterator(chunk_size=1000):
        summary.events += 1
        try:
            state, written = raw_event_renormalize(raw_event_id=raw_event_id, dry_run=dry_run)
        except (BadData, ValueError, RecursionError) as exc:
            logger.warning("raw_event %d does not renormalize: %s", raw_event_id, exc)
            summary.failed += 1
        else:
            summary.by_state[state] = summary.by_state.get(state, 0) + 1
            summary.written += written
        if on_each is not None:
            on_each(1)
    return summary
