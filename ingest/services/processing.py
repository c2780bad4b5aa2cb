"""raw_event_process: one delivery of one ledger row through its normalizer (SPEC §3).

The shape of a delivery:
1. Claim the row and count the delivery in its own committed transaction, before any work, so
   that a delivery that kills its worker is counted too (Redis would redeliver it forever under
   reject_on_worker_lost; the counter stops it at AMY_MAX_DELIVERIES).
2. Do the work and mark the row in a second transaction that holds the row lock: a concurrent
   delivery of the same id skips the locked row, and one that claimed in between makes this
   delivery stale (its `attempts` no longer matches), so exactly one delivery writes.
3. On failure: bad data is dead-lettered at once; anything else is retried with backoff and
   jitter, then dead-lettered.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Now

from admin_ops import metrics
from amy import tracing
from ingest.errors import BadData
from ingest.models import RawEvent, RawEventSource, RawEventState
from ingest.normalizers import normalizer_for
from ingest.normalizers.base import EventContext, Outcome
from ingest.services.dead_letter import raw_event_dead_letter

logger = logging.getLogger(__name__)

_MAX_ERROR_LENGTH = 2000

# A row is claimable when it waits (`received`), when its holder is gone (`processing` with no
# pending retry, or a lease that ran out), or by the retry message its own failure scheduled.
# SKIP LOCKED: a row locked by a live worker is being processed right now; leave it alone.
_CLAIM_SQL = """
UPDATE raw_events
SET attempts = attempts + 1, state = 'processing', process_error = NULL,
    lease_until = now() + make_interval(secs => %(lease_seconds)s)
WHERE id = (
    SELECT id FROM raw_events
    WHERE id = %(raw_event_id)s
      AND (state = 'received'
           OR (state = 'processing'
               AND (process_error IS NULL
                    OR lease_until IS NULL OR lease_until < now()
                    OR attempts = %(retry_of)s)))
    FOR UPDATE SKIP LOCKED
)
RETURNING attempts
"""


class ProcessStatus(StrEnum):
    DONE = "done"  # processed, skipped or parked
    RETRY = "retry"  # a transient failure; the caller schedules the retry
    DEAD = "dead"
    NOT_CLAIMED = "not_claimed"  # terminal already, or another delivery holds it


@dataclass(frozen=True)
class ProcessResult:
    status: ProcessStatus
    attempts: int = 0
    retry_in: float | None = None
    state: str | None = None


def retry_countdown(retries: int) -> float:
    """min(base * 2^n, max) seconds, +/- 20 % jitter (SPEC §3)."""
    delay = min(settings.AMY_RETRY_BASE_SECONDS * 2**retries, settings.AMY_RETRY_MAX_SECONDS)
    return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not cryptography


def raw_event_claim(*, raw_event_id: int, retry_of: int | None = None) -> int | None:
    """Claim a delivery; return the row's delivery count, or None when it is not ours to process."""
    # One statement in autocommit: committed before the work, with no BEGIN/COMMIT round trips.
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL,
            {
                "raw_event_id": raw_event_id,
                "retry_of": retry_of if retry_of is not None else -1,
                "lease_seconds": settings.AMY_TASK_TIME_LIMIT,
            },
        )
        row = cursor.fetchone()
    return row[0] if row else None


def event_context(raw_event: RawEvent, request_id: str | None = None) -> EventContext:
    """What a normalizer sees of a ledger row; BadData when its payload is not a JSON object."""
    if raw_event.payload is None:
        raise BadData("payload erased")
    try:
        payload = json.loads(raw_event.payload)
    except (ValueError, RecursionError) as exc:
        raise BadData(f"payload is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise BadData("payload is not a JSON object")
    return EventContext(
        raw_event_id=raw_event.pk,
        event_type=raw_event.event_type,
        terra_user_id=raw_event.terra_user_id,
        reference_id=raw_event.reference_id,
        provider=raw_event.provider,
        ordering_ts=raw_event.ordering_ts,
        request_id=request_id or raw_event.request_id,
        payload=payload,
        # Imported rows belong to the importing user whatever Terra user they name (SPEC §3).
        user_id=raw_event.user_id if raw_event.source == RawEventSource.IMPORT else None,
    )


def raw_event_mark(raw_event: RawEvent, outcome: Outcome) -> None:
    """Record a normalization's outcome on its row, in the caller's transaction."""
    is_final = outcome.state in (RawEventState.PROCESSED, RawEventState.SKIPPED)
    RawEvent.objects.filter(pk=raw_event.pk).update(
        state=outcome.state,
        process_error=outcome.reason,
        processed_at=Now() if is_final else None,
        lease_until=None,
        user_id=outcome.user_id or raw_event.user_id,
    )


def _normalize_claimed(*, raw_event_id: int, attempts: int, request_id: str | None) -> Outcome | None:
    """The work of one claimed delivery, in one transaction; None when the claim went stale."""
    with transaction.atomic():
        raw_event = RawEvent.objects.select_for_update().filter(pk=raw_event_id).first()
        if raw_event is None or raw_event.state != RawEventState.PROCESSING or raw_event.attempts != attempts:
            return None
        metrics.note_event_type(raw_event.event_type)
        context = event_context(raw_event, request_id)
        outcome = normalizer_for(raw_event.event_type)(context)
        raw_event_mark(raw_event, outcome)
        for callback in outcome.after_commit:
            transaction.on_commit(callback, robust=True)
    return outcome


def _schedule_retry(*, raw_event_id: int, attempts: int, error: str, countdown: float) -> None:
    # The row stays `processing`, leased past the countdown plus a run, so the drain leaves it
    # to the retry message; the message claims it by its `retry_of` = this delivery count.
    RawEvent.objects.filter(pk=raw_event_id, attempts=attempts, state=RawEventState.PROCESSING).update(
        process_error=error[:_MAX_ERROR_LENGTH],
        lease_until=Now() + timedelta(seconds=countdown + settings.AMY_TASK_TIME_LIMIT),
    )


@metrics.timed_normalize
def raw_event_process(
    *, raw_event_id: int, request_id: str | None = None, retries: int = 0, retry_of: int | None = None
) -> ProcessResult:
    """Process one delivery of a ledger row. Never raises for the event's own failures."""
    span = tracing.start("normalize", raw_event_id=raw_event_id, request_id=request_id, retries=retries)
    result = _process(raw_event_id=raw_event_id, request_id=request_id, retries=retries, retry_of=retry_of, span=span)
    span.end(attempts=result.attempts, outcome=result.state or result.status)
    return result


def _process(
    *, raw_event_id: int, request_id: str | None, retries: int, retry_of: int | None, span: tracing.Span
) -> ProcessResult:
    attempts = raw_event_claim(raw_event_id=raw_event_id, retry_of=retry_of)
    if attempts is None:
        logger.info("raw_event %d not claimed (terminal, or held by another delivery)", raw_event_id)
        return ProcessResult(ProcessStatus.NOT_CLAIMED)
    if attempts > settings.AMY_MAX_DELIVERIES:
        raw_event_dead_letter(raw_event_id=raw_event_id, error="max_deliveries", attempts=attempts)
        return ProcessResult(ProcessStatus.DEAD, attempts=attempts)

    try:
        outcome = _normalize_claimed(raw_event_id=raw_event_id, attempts=attempts, request_id=request_id)
    except BadData as exc:
        span.fail(exc, attempts=attempts, outcome="dead")
        logger.warning("raw_event %d is bad data, dead-lettered: %s", raw_event_id, exc)
        raw_event_dead_letter(raw_event_id=raw_event_id, error=f"bad_data: {exc}", attempts=attempts)
        return ProcessResult(ProcessStatus.DEAD, attempts=attempts)
    except Exception as exc:  # noqa: BLE001 - the one boundary where any failure becomes a retry
        error = f"{type(exc).__name__}: {exc}"
        span.fail(exc, attempts=attempts, outcome="retry" if retries < settings.AMY_MAX_RETRIES else "dead")
        if retries >= settings.AMY_MAX_RETRIES:
            logger.warning("raw_event %d failed after %d retries, dead-lettered: %s", raw_event_id, retries, error)
            raw_event_dead_letter(raw_event_id=raw_event_id, error=f"retries_exhausted: {error}", attempts=attempts)
            return ProcessResult(ProcessStatus.DEAD, attempts=attempts)
        countdown = retry_countdown(retries)
        logger.warning("raw_event %d failed, retry %d in %.1f s: %s", raw_event_id, retries + 1, countdown, error)
        _schedule_retry(raw_event_id=raw_event_id, attempts=attempts, error=error, countdown=countdown)
        return ProcessResult(ProcessStatus.RETRY, attempts=attempts, retry_in=countdown)

    if outcome is None:
        logger.info("raw_event %d claim went stale; another delivery processes it", raw_event_id)
        return ProcessResult(ProcessStatus.NOT_CLAIMED, attempts=attempts)
    logger.info("raw_event %d %s %s", raw_event_id, outcome.state, outcome.reason or "")
    return ProcessResult(ProcessStatus.DONE, attempts=attempts, state=outcome.state)
