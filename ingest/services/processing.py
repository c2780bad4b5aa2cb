"""The worker's one path: a delivery claims a batch of ledger rows and runs it through one pipeline.

A delivery (a Celery message) claims its own row, if it names one, and the oldest waiting rows
behind it, in one statement that counts each row's delivery and commits before any work: a
delivery that kills its worker is counted too, and AMY_MAX_DELIVERIES stops it. A single event is
a batch of one (`raw_event_process`).

The pipeline (`raw_events_run`):
1. Normalize, outside any transaction: each data event's payload through its pure parser. A
   payload that can never normalize is dead-lettered at once.
2. One short transaction per run of data events: lock the claimed rows still ours (a delivery
   that claimed one since makes ours stale: exactly one writer), read the Terra users'
   connections FOR SHARE in one statement, write every typed table once for the whole run
   (ingest/services/typed_rows.py: tables in a fixed order, rows in natural-key order, so that
   workers writing the same rows wait for each other instead of deadlocking), and mark the rows
   in one statement. Any other event (lifecycle, labs, a redelivered row that may have killed
   its worker before) runs alone in its own transaction, in ledger order.
3. A run that fails as a whole is taken again one event at a time; an event that fails alone
   takes the failure route: bad data is dead at once; anything else retries (the count lives on
   the row, `retries`) with backoff and jitter through a message that names this delivery, then
   is dead-lettered.

A delivery keeps claiming while its claims come back full, and a full claim nudges one more
worker (through the same coalesced nudge the webhook uses, ingest/publish.py), so every worker
process and node gets work while rows wait; a delivery that runs out of its time slice with rows
left nudges a continuation. A row's own message, arriving after a batch took it, finds it done or
held and costs one statement.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
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
from ingest.normalizers import normalizer_for
from ingest.normalizers.base import DataEvent, EventContext, Outcome, ParsedRows, processed
from ingest.publish import nudge_workers, publish_task
from ingest.queues import NORMALIZE_QUEUE, NORMALIZE_TASK
from ingest.services.dead_letter import raw_event_dead_letter
from ingest.services.owners import connections_for_share, resolve_owner
from ingest.services.typed_rows import EventRows, typed_rows_write_many

logger = logging.getLogger(__name__)

_MAX_ERROR_LENGTH = 2000

# What a claim returns: everything the work needs, so that it never reads the row again.
_CLAIMED_COLUMNS = (
    "r.id, r.attempts, r.retries, r.event_type, r.terra_user_id, r.reference_id, r.provider, r.ordering_ts, "
    "r.request_id, r.payload, r.source, r.user_id"
)

# What a batch's claim leaves in process_error until the row's work is done: the row's own nudge
# (still queued) must not take it as one whose holder is gone, as it would a NULL; a batch that
# dies mid-way leaves its rows to the lease.
BATCH_CLAIM_MARK = "claimed_by_batch"

# The claim. The delivery's own row is claimable when it waits (`received`), when its holder is
# gone (`processing` with no batch or retry pending, or a lease that ran out), or by the retry
# message its own failure scheduled (`retry_of` = the delivery count it was scheduled from).
# The batch: the oldest rows that wait, or whose lease ran out (a holder that died, a retry
# message that was lost), served by the drain's partial index on (queued_at, id).
# SKIP LOCKED: a row locked by another claim or a live holder's transaction is left to it.
_CLAIM_SQL = f"""
WITH own AS (
    SELECT id FROM raw_events
    WHERE id = %(raw_event_id)s
      AND (state = 'received'
           OR (state = 'processing'
               AND (process_error IS NULL
                    OR lease_until IS NULL OR lease_until < now()
                    OR attempts = %(retry_of)s)))
    FOR UPDATE SKIP LOCKED
), ready AS (
    SELECT id FROM raw_events
    WHERE (state = 'received' OR (state = 'processing' AND (lease_until IS NULL OR lease_until < now())))
      AND id <> %(raw_event_id)s
    ORDER BY queued_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE raw_events r
SET attempts = r.attempts + 1, state = 'processing',
    process_error = CASE WHEN r.id = %(raw_event_id)s THEN NULL ELSE '{BATCH_CLAIM_MARK}' END,
    lease_until = now() + make_interval(secs => %(lease_seconds)s)
WHERE r.id IN (SELECT id FROM own UNION ALL SELECT id FROM ready)
RETURNING {_CLAIMED_COLUMNS}
"""

# Inside the work's transaction: lock the claimed rows still ours (none was claimed again since).
_LOCK_SQL = """
SELECT r.id FROM raw_events r
JOIN unnest(%s::bigint[], %s::bigint[]) AS c(id, attempts) ON r.id = c.id AND r.attempts = c.attempts
WHERE r.state = 'processing'
ORDER BY r.id
FOR UPDATE OF r
"""

# A run's marks in one statement (the rows are locked by the run's transaction).
_MARK_SQL = """
UPDATE raw_events r
SET state = m.state, process_error = m.reason,
    processed_at = CASE WHEN m.state IN ('processed', 'skipped') THEN statement_timestamp() END,
    lease_until = NULL, user_id = COALESCE(m.user_id, r.user_id)
FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[]) AS m(id, state, reason, user_id)
WHERE r.id = m.id
"""

# A failure that will be retried: the row stays `processing`, leased past the countdown plus a
# run, so that batches and the drain leave it to its retry message (or take it once that is late).
_SCHEDULE_RETRY_SQL = """
UPDATE raw_events
SET retries = retries + 1, process_error = %s,
    lease_until = now() + make_interval(secs => %s)
WHERE id = %s AND attempts = %s AND state = 'processing'
"""


@dataclass(frozen=True)
class ClaimedEvent:
    """A claimed ledger row, as the claim returned it (the attributes event_context reads)."""

    pk: int
    attempts: int
    retries: int
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
    RETRY = "retry"  # a transient failure; its retry message is sent after the commit
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


# Claims
# ------------------------------------------------------------------------------


def raw_events_claim(
    *, raw_event_id: int | None = None, retry_of: int | None = None, limit: int = 0
) -> list[ClaimedEvent]:
    """Claim the delivery's own row (if it names one) and up to `limit` waiting rows, counting a
    delivery of each, in one statement committed before any work; in ledger order."""
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL,
            {
                "raw_event_id": raw_event_id if raw_event_id is not None else -1,
                "retry_of": retry_of if retry_of is not None else -1,
                "limit": max(limit, 0),
                "lease_seconds": settings.AMY_TASK_TIME_LIMIT,
            },
        )
        rows = cursor.fetchall()
    return sorted((ClaimedEvent(*row) for row in rows), key=lambda claimed: claimed.pk)


def raw_event_claim(*, raw_event_id: int, retry_of: int | None = None) -> int | None:
    """Claim one row's delivery; return its delivery count, or None when it is not ours to process."""
    claimed = raw_events_claim(raw_event_id=raw_event_id, retry_of=retry_of)
    return claimed[0].attempts if claimed else None


def _lock_claimed(claimed: list[ClaimedEvent]) -> set[int]:
    """Lock, in the current transaction, the claimed rows no other delivery claimed since."""
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_SQL, [[c.pk for c in claimed], [c.attempts for c in claimed]])
        return {row[0] for row in cursor.fetchall()}


# What a normalizer sees
# ------------------------------------------------------------------------------


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
        request_id=raw_event.request_id or request_id,
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


# The pipeline
# ------------------------------------------------------------------------------


@dataclass
class _Item:
    """One claimed event on its way through the pipeline."""

    event: ClaimedEvent
    span: tracing.Span
    started: float
    context: EventContext | None = None
    parsed: ParsedRows | None = None  # a data event's rows, parsed outside the transaction
    result: ProcessResult | None = None

    @property
    def request_id(self) -> str | None:
        return self.event.request_id or None


def _data_parser(event_type: str) -> DataEvent | None:
    normalizer = normalizer_for(event_type)
    return normalizer if isinstance(normalizer, DataEvent) else None


def _prepare(item: _Item) -> None:
    """Step 1, outside any transaction: the row's own checks, then the pure parse."""
    event = item.event
    if event.attempts > settings.AMY_MAX_DELIVERIES:
        raw_event_dead_letter(raw_event_id=event.pk, error="max_deliveries", attempts=event.attempts)
        item.result = ProcessResult(ProcessStatus.DEAD, attempts=event.attempts)
        return
    try:
        item.context = event_context(event)
        data = _data_parser(event.event_type)
        if data is not None:
            item.parsed = data.parse(item.context.payload)
            for warning in item.parsed.warnings:
                logger.warning("raw_event %d: %s", event.pk, warning)
    except Exception as exc:  # noqa: BLE001 - the failure route decides: dead or retry
        _failed(item, exc)


def _work(items: list[_Item]) -> dict[int, Outcome]:
    """Step 2 for a run: owners, typed rows and marks, in the caller's transaction (or savepoint).

    A run is either data events only (written together) or one other event alone.
    """
    outcomes: dict[int, Outcome] = {}
    writes: list[EventRows] = []
    data = [(item, item.context, item.parsed) for item in items if item.context and item.parsed is not None]
    if data:
        held = connections_for_share(context.terra_user_id for _, context, _ in data if not context.user_id)
        for item, context, parsed in data:
            owner = resolve_owner(context, held)
            if isinstance(owner, Outcome):
                outcomes[item.event.pk] = owner
                continue
            writes.append(
                EventRows(
                    parsed,
                    user_id=owner.user_id,
                    provider=owner.provider,
                    terra_user_id=context.terra_user_id,
                    raw_event_id=item.event.pk,
                    ordering_ts=item.event.ordering_ts,
                )
            )
            outcomes[item.event.pk] = processed(user_id=owner.user_id, after_commit=owner.after_commit)
        typed_rows_write_many(writes)
    for item in items:
        if item.parsed is None and item.context is not None:
            token = current_request_id.set(item.request_id)
            try:
                outcomes[item.event.pk] = normalizer_for(item.event.event_type)(item.context)
            finally:
                current_request_id.reset(token)
    with connection.cursor() as cursor:
        cursor.execute(
            _MARK_SQL,
            [
                list(outcomes),
                [str(outcome.state) for outcome in outcomes.values()],
                [outcome.reason for outcome in outcomes.values()],
                [outcome.user_id for outcome in outcomes.values()],
            ],
        )
    for outcome in outcomes.values():
        for callback in outcome.after_commit:
            transaction.on_commit(callback, robust=True)
    return outcomes


def _done(item: _Item, outcome: Outcome) -> None:
    item.result = ProcessResult(ProcessStatus.DONE, attempts=item.event.attempts, state=outcome.state)
    logger.info("raw_event %d %s %s", item.event.pk, outcome.state, outcome.reason or "")


def _run_together(items: list[_Item]) -> None:
    """Step 2 and 3 for one run, in one transaction."""
    with transaction.atomic():
        mine = _lock_claimed([item.event for item in items])
        for item in items:
            if item.event.pk not in mine:
                logger.info("raw_event %d claim went stale; another delivery processes it", item.event.pk)
                item.result = ProcessResult(ProcessStatus.NOT_CLAIMED, attempts=item.event.attempts)
        items = [item for item in items if item.event.pk in mine]
        if not items:
            return
        try:
            with transaction.atomic():  # a savepoint: a failure rolls back this run alone
                outcomes = _work(items)
        except Exception as exc:  # noqa: BLE001 - the run is taken again one event at a time
            if len(items) == 1:
                _failed(items[0], exc)
                return
            logger.info(
                "a run of %d events failed (%s: %s); taking them one at a time", len(items), type(exc).__name__, exc
            )
            for item in items:
                try:
                    with transaction.atomic():
                        outcome = _work([item])[item.event.pk]
                except Exception as single_exc:  # noqa: BLE001 - this event's own failure
                    _failed(item, single_exc)
                else:
                    _done(item, outcome)
            return
        for item in items:
            _done(item, outcomes[item.event.pk])


def _runs(items: list[_Item]) -> Iterator[list[_Item]]:
    """The events still to work on, in ledger order: consecutive first deliveries of data events
    together; any other event alone (a lifecycle event sees, and is seen by, its neighbours in
    order; a redelivered row may be what killed its worker, and takes no neighbour with it)."""
    together: list[_Item] = []
    for item in items:
        if item.result is not None:
            continue
        if item.parsed is not None and item.event.attempts == 1:
            together.append(item)
            continue
        if together:
            yield together
            together = []
        yield [item]
    if together:
        yield together


def raw_events_run(claimed: list[ClaimedEvent]) -> list[ProcessResult]:
    """The pipeline: the claimed events normalized, written and marked (module docstring).

    Never raises for an event's own failure; a failure of the database itself leaves the rows of
    the run `processing` and leased, for the lease to give them back.
    """
    items = [
        _Item(
            event,
            tracing.start(
                "normalize",
                held=True,
                raw_event_id=event.pk,
                request_id=event.request_id or None,
                retries=event.retries,
            ),
            time.perf_counter(),
        )
        for event in claimed
    ]
    for item in items:
        _prepare(item)
    try:
        for run in _runs(items):
            _run_together(run)
    finally:
        for item in items:
            if item.result is None:
                continue  # rolled back with its run: left to the lease, and never said
            if item.result.status != ProcessStatus.NOT_CLAIMED:
                item.span.end(attempts=item.result.attempts, outcome=item.result.state or item.result.status)
            metrics.normalize_record(item.event.event_type, item.result, time.perf_counter() - item.started)
    return [item.result for item in items if item.result is not None]


# The failure route
# ------------------------------------------------------------------------------


def _failed(item: _Item, exc: Exception) -> None:
    """An event's own failure: bad data is dead at once; anything else retries, then is dead."""
    event = item.event
    raw_event_id, attempts = event.pk, event.attempts
    if isinstance(exc, BadData):
        item.span.fail(exc, attempts=attempts, outcome="dead")
        logger.warning("raw_event %d is bad data, dead-lettered: %s", raw_event_id, exc)
        raw_event_dead_letter(raw_event_id=raw_event_id, error=f"bad_data: {exc}", attempts=attempts)
        item.result = ProcessResult(ProcessStatus.DEAD, attempts=attempts)
        return
    error = f"{type(exc).__name__}: {exc}"
    exhausted = event.retries >= settings.AMY_MAX_RETRIES
    item.span.fail(exc, attempts=attempts, outcome="dead" if exhausted else "retry")
    if exhausted:
        logger.warning("raw_event %d failed after %d retries, dead-lettered: %s", raw_event_id, event.retries, error)
        raw_event_dead_letter(raw_event_id=raw_event_id, error=f"retries_exhausted: {error}", attempts=attempts)
        item.result = ProcessResult(ProcessStatus.DEAD, attempts=attempts)
        return
    countdown = retry_countdown(event.retries)
    logger.warning("raw_event %d failed, retry %d in %.1f s: %s", raw_event_id, event.retries + 1, countdown, error)
    with connection.cursor() as cursor:
        cursor.execute(
            _SCHEDULE_RETRY_SQL,
            [error[:_MAX_ERROR_LENGTH], countdown + settings.AMY_TASK_TIME_LIMIT, raw_event_id, attempts],
        )
        scheduled = cursor.rowcount == 1
    if scheduled:
        transaction.on_commit(partial(_send_retry, raw_event_id, item.request_id, attempts, countdown), robust=True)
    item.result = ProcessResult(ProcessStatus.RETRY, attempts=attempts, retry_in=countdown)


def _send_retry(raw_event_id: int, request_id: str | None, attempts: int, countdown: float) -> None:
    # If it is lost, the row's lease runs out and a batch (or the drain's nudge) takes it.
    publish_task(
        NORMALIZE_TASK,
        {"raw_event_id": raw_event_id, "request_id": request_id, "retry_of": attempts},
        queue=NORMALIZE_QUEUE,
        countdown=countdown,
    )


# Deliveries
# ------------------------------------------------------------------------------


def raw_event_process(
    *, raw_event_id: int, request_id: str | None = None, retry_of: int | None = None
) -> ProcessResult:
    """One delivery of one ledger row (a batch of one). Never raises for the event's own failures.

    The trace carries the row's own request id; `request_id` (the message's) stands in for a row
    that has none.
    """
    claimed = raw_events_claim(raw_event_id=raw_event_id, retry_of=retry_of)
    if not claimed:
        # Terminal, or held by another delivery: once batches run, most messages find their row
        # done, so this is the common case and costs one statement (no trace; counted).
        logger.debug("raw_event %d not claimed (terminal, or held by another delivery)", raw_event_id)
        result = ProcessResult(ProcessStatus.NOT_CLAIMED)
        metrics.normalize_record("", result, 0.0)
        return result
    event = claimed[0]
    if not event.request_id and request_id:
        event = replace(event, request_id=request_id)
    results = raw_events_run([event])
    return results[0] if results else ProcessResult(ProcessStatus.NOT_CLAIMED, attempts=event.attempts)


def raw_events_process_ready(
    *,
    raw_event_id: int | None = None,
    retry_of: int | None = None,
    batch_size: int | None = None,
    max_seconds: float | None = None,
) -> dict[str, int]:
    """A delivery: its own row (if named) and the waiting rows, batch after batch, while claims come
    back full and its time slice lasts. Returns how many events ended in each status.

    Never raises: a batch that fails as a whole leaves its rows `processing` and leased, for the
    lease to give them back to the next claim.
    """
    size = settings.AMY_NORMALIZE_BATCH_SIZE if batch_size is None else batch_size
    seconds = settings.AMY_NORMALIZE_BATCH_SECONDS if max_seconds is None else max_seconds
    counts: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    own = raw_event_id
    while True:
        try:
            claimed = raw_events_claim(raw_event_id=own, retry_of=retry_of, limit=size)
        except Exception:  # never fail the delivery: its message is acked, the lease and drain cover
            logger.exception("a normalize claim failed")
            break
        full = size > 0 and sum(event.pk != own for event in claimed) >= size
        if full:
            nudge_workers()  # more rows wait than one batch: bring another worker in
        if own is not None and not any(event.pk == own for event in claimed):
            metrics.normalize_record("", ProcessResult(ProcessStatus.NOT_CLAIMED), 0.0)
        own, retry_of = None, None
        if claimed:
            try:
                for result in raw_events_run(claimed):
                    counts[str(result.status)] = counts.get(str(result.status), 0) + 1
            except Exception:  # never fail the delivery that ran the batch
                logger.exception("a normalize batch failed; its rows go back to their lease")
                break
        if not full:
            break
        if time.monotonic() >= deadline:
            nudge_workers()  # rows are left: a continuation takes them
            break
    return counts
