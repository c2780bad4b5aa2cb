"""raw_event_process: one delivery of one ledger row through its normalizer.

The shape of a delivery:
1. Claim the row and count the delivery in its own committed transaction, before any work, so
   that a delivery that kills its worker is counted too (Redis would redeliver it forever under
   reject_on_worker_lost; the counter stops it at AMY_MAX_DELIVERIES).
2. Do the work and mark the row in a second transaction that holds the row lock: a concurrent
   delivery of the same id skips the locked row, and one that claimed in between makes this
   delivery stale (its `attempts` no longer matches), so exactly one delivery writes.
3. On failure: bad data is dead-lettered at once; anything else is retried with backoff and
   jitter, then dead-lettered.

After its own event, a delivery may take further `received` rows in bounded batches
(`raw_events_process_ready`): the Celery hand-off of one message costs more than normalizing an
event, so one message normalizes many. The batch keeps the same guarantees: its claim counts each
row's delivery and commits before the work; its transaction holds the rows' locks (a message for
one of them skips it, as it would skip a row another delivery holds); each event runs in its own
savepoint (a failure rolls back that event alone and takes the single path's retry or dead-letter
route); a row's own nudge, arriving while a batch holds it, leaves it alone (the claim marks it
`claimed_by_batch`, so it does not look like a row whose holder is gone); rows a batch gives back
unreached are nudged again; and a batch killed mid-way leaves its rows to the lease and the drain.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Now

from amy import metrics, tracing
from amy.request_context import current_request_id
from ingest.errors import BadData
from ingest.json_object import NotAJsonObject, parse_json_object
from ingest.models import RawEvent, RawEventSource, RawEventState
from ingest.normalizers import CONNECTION_READ_ONLY_TYPES, normalizer_for
from ingest.normalizers.base import EventContext, Outcome
from ingest.normalizers.data import connections_forget, connections_held
from ingest.publish import NORMALIZE_QUEUE, NORMALIZE_TASK, publish_raw_events
from ingest.services.dead_letter import raw_event_dead_letter

logger = logging.getLogger(__name__)

_MAX_ERROR_LENGTH = 2000

# What a claim returns: everything the work needs, so that it never reads the row again.
_CLAIMED_COLUMNS = (
    "id, attempts, event_type, terra_user_id, reference_id, provider, ordering_ts, request_id, payload, source, user_id"
)
_CLAIM_SET = """
SET attempts = attempts + 1, state = 'processing', process_error = %(claim_mark)s,
    lease_until = now() + make_interval(secs => %(lease_seconds)s)
"""

# What a batch's claim leaves in process_error until the row's work is done: its own nudge (still
# queued) must not take the row as one whose holder is gone, as it would a NULL; a batch that
# dies mid-way leaves its rows to the lease and the drain.
BATCH_CLAIM_MARK = "claimed_by_batch"

# A row is claimable when it waits (`received`), when its holder is gone (`processing` with no
# pending retry, or a lease that ran out), or by the retry message its own failure scheduled.
# SKIP LOCKED: a row locked by a live worker is being processed right now; leave it alone.
_CLAIM_SQL = f"""
UPDATE raw_events {_CLAIM_SET}
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
RETURNING {_CLAIMED_COLUMNS}
"""

# The batch: the oldest waiting rows (the drain's partial index serves `state = 'received'`).
_CLAIM_READY_SQL = f"""
UPDATE raw_events {_CLAIM_SET}
WHERE id IN (
    SELECT id FROM raw_events
    WHERE state = 'received'
    ORDER BY queued_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING {_CLAIMED_COLUMNS}
"""

# Inside the work's transaction: lock the claimed rows still ours (none was claimed again since).
_LOCK_SQL = """
SELECT r.id FROM raw_events r
JOIN unnest(%s::bigint[], %s::bigint[]) AS c(id, attempts) ON r.id = c.id AND r.attempts = c.attempts
WHERE r.state = 'processing'
FOR UPDATE OF r
"""

_LOCK_ONE_SQL = "SELECT id FROM raw_events WHERE id = %s AND attempts = %s AND state = 'processing' FOR UPDATE"

_RELEASE_SQL = """
UPDATE raw_events r SET state = 'received', attempts = r.attempts - 1, lease_until = NULL, process_error = NULL
FROM unnest(%s::bigint[], %s::bigint[]) AS c(id, attempts)
WHERE r.id = c.id AND r.attempts = c.attempts AND r.state = 'processing'
RETURNING r.id
"""

_MARK_SQL = """
UPDATE raw_events
SET state = %s, process_error = %s, processed_at = CASE WHEN %s THEN statement_timestamp() END,
    lease_until = NULL, user_id = COALESCE(%s, user_id)
WHERE id = %s
"""

# A batch's marks in one statement (the rows are locked by the batch's transaction).
_MARK_MANY_SQL = """
UPDATE raw_events r
SET state = m.state, process_error = m.reason,
    processed_at = CASE WHEN m.state IN ('processed', 'skipped') THEN statement_timestamp() END,
    lease_until = NULL, user_id = COALESCE(m.user_id, r.user_id)
FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[]) AS m(id, state, reason, user_id)
WHERE r.id = m.id
"""

_FINAL_STATES = (RawEventState.PROCESSED, RawEventState.SKIPPED)


@dataclass(frozen=True)
class ClaimedEvent:
    """A claimed ledger row, as the claim returned it (the attributes event_context reads)."""

    pk: int
    attempts: int
    event_type: str
    terra_user_id: str
    reference_id: str
    provider: str
    ordering_ts: int | None
    request_id: str
    payload: str | None
    source: str
    user_id: str | None


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
    """min(base * 2^n, max) seconds, +/- 20 % jitter."""
    delay = min(settings.AMY_RETRY_BASE_SECONDS * 2**retries, settings.AMY_RETRY_MAX_SECONDS)
    return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not cryptography


def _claim(*, raw_event_id: int, retry_of: int | None) -> ClaimedEvent | None:
    # One statement in autocommit: committed before the work, with no BEGIN/COMMIT round trips.
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL,
            {
                "raw_event_id": raw_event_id,
                "retry_of": retry_of if retry_of is not None else -1,
                "lease_seconds": settings.AMY_TASK_TIME_LIMIT,
                "claim_mark": None,
            },
        )
        row = cursor.fetchone()
    return ClaimedEvent(*row) if row else None


def raw_event_claim(*, raw_event_id: int, retry_of: int | None = None) -> int | None:
    """Claim a delivery; return the row's delivery count, or None when it is not ours to process."""
    claimed = _claim(raw_event_id=raw_event_id, retry_of=retry_of)
    return claimed.attempts if claimed else None


def raw_events_claim_ready(*, limit: int) -> list[ClaimedEvent]:
    """Claim up to `limit` waiting rows, oldest first, counting a delivery of each (committed)."""
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_READY_SQL,
            {"limit": limit, "lease_seconds": settings.AMY_TASK_TIME_LIMIT, "claim_mark": BATCH_CLAIM_MARK},
        )
        rows = cursor.fetchall()
    return sorted((ClaimedEvent(*row) for row in rows), key=lambda claimed: claimed.pk)


def _lock_claimed(claimed: list[ClaimedEvent]) -> set[int]:
    """Lock, in the current transaction, the claimed rows no other delivery claimed since."""
    with connection.cursor() as cursor:
        if len(claimed) == 1:
            cursor.execute(_LOCK_ONE_SQL, [claimed[0].pk, claimed[0].attempts])
        else:
            cursor.execute(_LOCK_SQL, [[c.pk for c in claimed], [c.attempts for c in claimed]])
        return {row[0] for row in cursor.fetchall()}


def event_context(raw_event: RawEvent | ClaimedEvent, request_id: str | None = None) -> EventContext:
    """What a normalizer sees of a ledger row; BadData when its payload is not a JSON object."""
    if raw_event.payload is None:
        raise BadData("payload erased")
    try:
        _, payload = parse_json_object(raw_event.payload)
    except NotAJsonObject as exc:
        raise BadData(f"payload is {exc.reason}") from exc
    return EventContext(
        raw_event_id=raw_event.pk,
        event_type=raw_event.event_type,
        terra_user_id=raw_event.terra_user_id,
        reference_id=raw_event.reference_id,
        provider=raw_event.provider,
        ordering_ts=raw_event.ordering_ts,
        request_id=request_id or raw_event.request_id,
        payload=payload,
        # Imported rows belong to the importing user whatever Terra user they name.
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


def _mark(claimed: ClaimedEvent, outcome: Outcome) -> None:
    # raw_event_mark's statement, without the ORM's per-call query building.
    with connection.cursor() as cursor:
        cursor.execute(
            _MARK_SQL, [outcome.state, outcome.reason, outcome.state in _FINAL_STATES, outcome.user_id, claimed.pk]
        )


def _normalize(claimed: ClaimedEvent, request_id: str | None) -> Outcome:
    """The work of one claimed, locked row, in the caller's transaction (or savepoint)."""
    metrics.note_event_type(claimed.event_type)
    context = event_context(claimed, request_id)
    outcome = normalizer_for(claimed.event_type)(context)
    _mark(claimed, outcome)
    for callback in outcome.after_commit:
        transaction.on_commit(callback, robust=True)
    return outcome


def _normalize_claimed(claimed: ClaimedEvent, request_id: str | None) -> Outcome | None:
    """The work of one claimed delivery, in one transaction; None when the claim went stale."""
    with transaction.atomic():
        if not _lock_claimed([claimed]):
            return None
        return _normalize(claimed, request_id)


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
    claimed = _claim(raw_event_id=raw_event_id, retry_of=retry_of)
    if claimed is None:
        # Terminal, or held by another delivery: once batches run, most nudges find their row done,
        # so this is the common case and costs one statement (no trace; counted in the metrics).
        logger.debug("raw_event %d not claimed (terminal, or held by another delivery)", raw_event_id)
        return ProcessResult(ProcessStatus.NOT_CLAIMED)
    span = tracing.start("normalize", raw_event_id=raw_event_id, request_id=request_id, retries=retries)
    result = _process(claimed, request_id=request_id, retries=retries, span=span)
    span.end(attempts=result.attempts, outcome=result.state or result.status)
    return result


def _process(claimed: ClaimedEvent, *, request_id: str | None, retries: int, span: tracing.Span) -> ProcessResult:
    if claimed.attempts > settings.AMY_MAX_DELIVERIES:
        raw_event_dead_letter(raw_event_id=claimed.pk, error="max_deliveries", attempts=claimed.attempts)
        return ProcessResult(ProcessStatus.DEAD, attempts=claimed.attempts)
    try:
        outcome = _normalize_claimed(claimed, request_id)
    except Exception as exc:  # noqa: BLE001 - the one boundary where any failure becomes a retry or a dead letter
        return _failed(claimed, exc, retries=retries, span=span)
    if outcome is None:
        logger.info("raw_event %d claim went stale; another delivery processes it", claimed.pk)
        return ProcessResult(ProcessStatus.NOT_CLAIMED, attempts=claimed.attempts)
    logger.info("raw_event %d %s %s", claimed.pk, outcome.state, outcome.reason or "")
    return ProcessResult(ProcessStatus.DONE, attempts=claimed.attempts, state=outcome.state)


def _failed(claimed: ClaimedEvent, exc: Exception, *, retries: int, span: tracing.Span) -> ProcessResult:
    """A delivery's failure: bad data is dead at once; anything else retries, then is dead."""
    raw_event_id, attempts = claimed.pk, claimed.attempts
    if isinstance(exc, BadData):
        span.fail(exc, attempts=attempts, outcome="dead")
        logger.warning("raw_event %d is bad data, dead-lettered: %s", raw_event_id, exc)
        raw_event_dead_letter(raw_event_id=raw_event_id, error=f"bad_data: {exc}", attempts=attempts)
        return ProcessResult(ProcessStatus.DEAD, attempts=attempts)
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


# Batches
# ------------------------------------------------------------------------------


def _send_retry(raw_event_id: int, request_id: str | None, attempts: int, countdown: float) -> None:
    """The retry message of a batched event's failure, as Task.retry would send it (retries = 1).

    If it is lost, the row's lease runs out and the drain nudges it again.
    """
    from amy.celery import app as celery_app

    try:
        celery_app.send_task(
            NORMALIZE_TASK,
            kwargs={"raw_event_id": raw_event_id, "request_id": request_id, "retry_of": attempts},
            queue=NORMALIZE_QUEUE,
            countdown=countdown,
            retries=1,
        )
    except Exception as exc:  # noqa: BLE001 - a broker error must not fail the batch; the drain covers it
        logger.warning("retry of raw_event %d not queued, left to the drain: %r", raw_event_id, exc)


@metrics.timed_normalize
def _process_batched(claimed: ClaimedEvent) -> ProcessResult:
    """One event of a batch, in its own savepoint: traced and counted as a delivery of its own."""
    request_id = claimed.request_id or None
    token = current_request_id.set(request_id)
    span = tracing.start("normalize", raw_event_id=claimed.pk, request_id=request_id, retries=0, batched=True)
    try:
        if claimed.attempts > settings.AMY_MAX_DELIVERIES:
            raw_event_dead_letter(raw_event_id=claimed.pk, error="max_deliveries", attempts=claimed.attempts)
            result = ProcessResult(ProcessStatus.DEAD, attempts=claimed.attempts)
        else:
            try:
                with transaction.atomic():  # a savepoint: a failure rolls back this event alone
                    outcome = _normalize(claimed, request_id)
            except Exception as exc:  # noqa: BLE001 - per-event isolation: never fail the neighbours
                # (When the batch's own transaction is broken, the dead letter or retry below
                # raises, and the whole batch goes back to its rows' own messages.)
                result = _failed(claimed, exc, retries=0, span=span)
                if result.status == ProcessStatus.RETRY and result.retry_in is not None:
                    transaction.on_commit(
                        partial(_send_retry, claimed.pk, request_id, claimed.attempts, result.retry_in), robust=True
                    )
            else:
                result = ProcessResult(ProcessStatus.DONE, attempts=claimed.attempts, state=outcome.state)
        span.end(attempts=result.attempts, outcome=result.state or result.status)
        return result
    finally:
        current_request_id.reset(token)


def _release(claimed: list[ClaimedEvent]) -> None:
    """Give back rows a batch claimed but did not reach: `received` again, the delivery uncounted,
    and nudged again after commit (their own nudges may have come and gone while the batch held
    them; if this publish fails, the drain finds them)."""
    with connection.cursor() as cursor:
        cursor.execute(_RELEASE_SQL, [[c.pk for c in claimed], [c.attempts for c in claimed]])
        released = [row[0] for row in cursor.fetchall()]
    if released:
        transaction.on_commit(partial(publish_raw_events, released), robust=True)


class _TakeCareful(Exception):
    """An event of the quick run needs the careful path (its own savepoint)."""


def _mark_many(done: list[tuple[ClaimedEvent, Outcome]]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            _MARK_MANY_SQL,
            [
                [event.pk for event, _ in done],
                [str(outcome.state) for _, outcome in done],
                [outcome.reason for _, outcome in done],
                [outcome.user_id for _, outcome in done],
            ],
        )


def _normalize_quick(event: ClaimedEvent, request_id: str | None) -> Outcome:
    # _normalize without the mark (the quick run marks its rows together) and with the batch's
    # held connections forgotten around an event that may write one.
    reads_connections_only = event.event_type in CONNECTION_READ_ONLY_TYPES
    if not reads_connections_only:
        connections_forget()
    outcome = normalizer_for(event.event_type)(event_context(event, request_id))
    if not reads_connections_only:
        connections_forget()
    for callback in outcome.after_commit:
        transaction.on_commit(callback, robust=True)
    return outcome


def _process_quick(
    events: list[ClaimedEvent], deadline: float
) -> tuple[list[ProcessResult], list[ClaimedEvent]] | None:
    """A batch's events in one savepoint, each Terra user's connection locked once, the rows
    marked in one statement: the common case, where every event normalizes.

    None when one does not (a failure, or more deliveries than allowed): the whole run is rolled
    back — its typed rows, marks and after-commit work, and its traces were never said (held
    spans) — and the caller takes the events the careful way, one savepoint each. Otherwise the
    results, and the events not reached by the deadline.
    """
    done: list[tuple[ClaimedEvent, Outcome]] = []
    closing: list[tuple[tracing.Span, float]] = []
    unreached: list[ClaimedEvent] = []
    try:
        with transaction.atomic(), connections_held():
            for index, event in enumerate(events):
                if time.monotonic() >= deadline:
                    unreached = events[index:]
                    break
                if event.attempts > settings.AMY_MAX_DELIVERIES:
                    raise _TakeCareful
                request_id = event.request_id or None
                token = current_request_id.set(request_id)
                try:
                    started = time.perf_counter()
                    span = tracing.start(
                        "normalize", held=True, raw_event_id=event.pk, request_id=request_id, retries=0, batched=True
                    )
                    done.append((event, _normalize_quick(event, request_id)))
                    closing.append((span, time.perf_counter() - started))
                finally:
                    current_request_id.reset(token)
            if done:
                _mark_many(done)
    except Exception as exc:  # noqa: BLE001 - any failure sends the run the careful way
        logger.debug("quick batch run rolled back (%s); taking its events one savepoint each", type(exc).__name__)
        return None
    results = []
    for (event, outcome), (span, seconds) in zip(done, closing, strict=True):
        result = ProcessResult(ProcessStatus.DONE, attempts=event.attempts, state=outcome.state)
        span.end(attempts=event.attempts, outcome=outcome.state)
        metrics.normalize_record(event.event_type, result, seconds)
        results.append(result)
    return results, unreached


def _process_careful(events: list[ClaimedEvent], deadline: float) -> list[ProcessResult]:
    """A batch's events one savepoint each, so that a failure stays its event's own."""
    results = []
    for index, event in enumerate(events):
        if time.monotonic() >= deadline:
            _release(events[index:])
            break
        results.append(_process_batched(event))
    return results


def raw_events_process_ready(*, batch_size: int | None = None, max_seconds: float | None = None) -> dict[str, int]:
    """Claim and process waiting rows in batches until none wait or `max_seconds` have passed.

    Never raises: a batch that fails as a whole leaves its rows `processing` and leased, for the
    drain once the lease runs out.
    Returns how many events ended in each status.
    """
    size = settings.AMY_NORMALIZE_BATCH_SIZE if batch_size is None else batch_size
    seconds = settings.AMY_NORMALIZE_BATCH_SECONDS if max_seconds is None else max_seconds
    counts: dict[str, int] = {}
    if size <= 0:
        return counts
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            claimed = raw_events_claim_ready(limit=size)
            if not claimed:
                break
            with transaction.atomic():
                mine = _lock_claimed(claimed)
                events = [event for event in claimed if event.pk in mine]
                quick = _process_quick(events, deadline)
                if quick is None:
                    results = _process_careful(events, deadline)
                else:
                    results, unreached = quick
                    if unreached:
                        _release(unreached)
            for result in results:
                counts[str(result.status)] = counts.get(str(result.status), 0) + 1
        except Exception:  # never fail the delivery that ran the batch
            logger.exception("a normalize batch failed; its events go back to their own messages")
            break
    return counts
