"""Ops services: replay with lineage, dry runs, DLQ pages, counters and user snapshots.

One replay service serves the JSON endpoints, the management command and the console:
a row goes back to `received` by one conditional UPDATE (`state NOT IN (received, processing)`),
so two operators replaying the same row cannot both succeed, and a row a worker holds is never
touched. The lineage columns on the row (`replay_count`, `last_replayed_at`, `last_replayed_by`)
say who replayed it last; every ops write also leaves an `AuditRecord` (who, when, what, which
rows) and one JSON line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Model, Q
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from redis.exceptions import RedisError

from accounts.models import User
from admin_ops.models import AuditRecord, TraceEvent
from amy import pagination
from amy.errors import ApiError
from ingest.errors import BadData
from ingest.models import (
    TYPED_MODELS,
    UNPROCESSED_STATES,
    Activity,
    Biomarker,
    ConnectionStatus,
    DailySummary,
    LabUpload,
    RawEvent,
    RawEventState,
    SleepSession,
    TerraConnection,
)
from ingest.normalizers import normalizer_for
from ingest.publish import DLQ_QUEUE, NORMALIZE_QUEUE, publish_raw_events
from ingest.services.processing import event_context

logger = logging.getLogger(__name__)

ALREADY_QUEUED = "already_queued"
RAW_EVENT_NOT_FOUND = "raw_event_not_found"
USER_NOT_FOUND = "user_not_found"

TYPED_TABLES: tuple[type[Model], ...] = TYPED_MODELS

UNHEALTHY_UNPROCESSED = 100
UNHEALTHY_ERRORED = 20

DLQ_DEFAULT_LIMIT = 50
DLQ_MAX_LIMIT = 500
LISTABLE_STATES = (RawEventState.DEAD, RawEventState.PARKED)

_MAX_REPLAY_IDS = 10_000
_UPDATE_CHUNK = 1_000

# The guard: only a row no worker holds or waits for goes back to `received`. The delivery and
# retry counts restart so that AMY_MAX_DELIVERIES and AMY_MAX_RETRIES bound the replay afresh.
_REPLAY_SQL = """
UPDATE raw_events
SET state = 'received', queued_at = now(), process_error = NULL, lease_until = NULL,
    dead_lettered_at = NULL, processed_at = NULL, attempts = 0, retries = 0,
    replay_count = replay_count + 1, last_replayed_at = now(), last_replayed_by = %(actor)s
WHERE id = ANY(%(ids)s) AND state NOT IN ('received', 'processing')
RETURNING id, state, replay_count
"""


def _error(message: str, code: str, status: int, **details: Any) -> ApiError:
    return ApiError(message, code=code, status=status, details=details or None)


def _audit(action: str, *, actor: str, raw_event_ids: list[int] | None = None, **data: Any) -> AuditRecord:
    """One record per ops write (who, when, what, on which rows), and the same as a JSON line."""
    ids = list(raw_event_ids or [])
    request_id = data.pop("request_id", None)
    record = AuditRecord.objects.create(
        actor=actor[:255],
        action=action,
        request_id=request_id,
        raw_event_count=len(ids),
        raw_event_ids=ids,
        details=json.loads(json.dumps(data, default=str)),
    )
    line = {
        "audit": action,
        "actor": actor,
        "at": record.at.isoformat(),
        "raw_event_ids": ids,
        "request_id": request_id,
        **data,
    }
    logger.info(json.dumps(line, default=str, separators=(",", ":")))
    return record


# Replay ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayedRow:
    raw_event_id: int
    state: str
    replay_count: int


@dataclass(frozen=True)
class BulkReplayResult:
    matched: int
    replayed: int
    skipped: int
    replayed_ids: list[int] = field(default_factory=list)


def _replay_ids(ids: list[int], *, actor: str, request_id: str | None) -> list[ReplayedRow]:
    """Back to `received` every listed row that is not queued; published after commit (one batch)."""
    rows: list[ReplayedRow] = []
    with transaction.atomic():
        with connection.cursor() as cursor:
            for start in range(0, len(ids), _UPDATE_CHUNK):
                cursor.execute(_REPLAY_SQL, {"ids": ids[start : start + _UPDATE_CHUNK], "actor": actor})
                rows.extend(ReplayedRow(*row) for row in cursor.fetchall())
        if rows:
            replayed = [row.raw_event_id for row in rows]
            transaction.on_commit(partial(publish_raw_events, replayed, request_id), robust=True)
    return rows


def raw_event_replay(*, raw_event_id: int, actor: str, request_id: str | None = None) -> ReplayedRow:
    """Replay one row: 404 `raw_event_not_found`, 409 `already_queued` when received/processing."""
    rows = _replay_ids([raw_event_id], actor=actor, request_id=request_id)
    if not rows:
        state = RawEvent.objects.filter(pk=raw_event_id).values_list("state", flat=True).first()
        if state is None:
            raise _error(f"Raw event {raw_event_id} does not exist.", RAW_EVENT_NOT_FOUND, 404)
        raise _error(
            f"Raw event {raw_event_id} is already {state}: it is queued for a worker.",
            ALREADY_QUEUED,
            409,
            state=state,
        )
    _audit("raw_event_replay", actor=actor, raw_event_ids=[raw_event_id], request_id=request_id)
    return rows[0]


@dataclass(frozen=True)
class ReplayFilter:
    """Which rows a bulk replay takes: dead (or parked) rows, narrowed by type, time and error."""

    state: str = RawEventState.DEAD
    event_type: str | None = None
    since: datetime | None = None
    error_contains: str | None = None

    def is_empty(self) -> bool:
        return not (self.event_type or self.since or self.error_contains)


def raw_events_matching(replay_filter: ReplayFilter) -> Any:
    """The rows a filter names, newest first. `since` is on `dead_lettered_at` for dead rows (the
    time they failed), on `received_at` for parked ones."""
    rows = RawEvent.objects.filter(state=replay_filter.state)
    if replay_filter.event_type:
        rows = rows.filter(event_type=replay_filter.event_type)
    if replay_filter.since:
        since_field = "dead_lettered_at" if replay_filter.state == RawEventState.DEAD else "received_at"
        rows = rows.filter(**{f"{since_field}__gte": replay_filter.since})
    if replay_filter.error_contains:
        rows = rows.filter(process_error__icontains=replay_filter.error_contains)
    return rows.order_by("-id")


def raw_events_replay(
    *,
    actor: str,
    ids: list[int] | None = None,
    replay_filter: ReplayFilter | None = None,
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> BulkReplayResult:
    """Bulk replay by ids (any row not queued) or by a filter over dead rows.

    `matched` = rows found (ids that exist, or rows the filter matches); `replayed` = rows put
    back to `received`; `skipped` = matched rows left alone because they were already queued.
    """
    if ids is not None:
        wanted = sorted(set(ids))[:_MAX_REPLAY_IDS]
        matched_ids = list(RawEvent.objects.filter(pk__in=wanted).values_list("pk", flat=True))
    else:
        matched_ids = list(
            raw_events_matching(replay_filter or ReplayFilter()).values_list("pk", flat=True)[:_MAX_REPLAY_IDS]
        )
    rows = _replay_ids(matched_ids, actor=actor, request_id=request_id) if matched_ids else []
    replayed_ids = [row.raw_event_id for row in rows]
    if replayed_ids:
        _audit("raw_events_replay", actor=actor, raw_event_ids=replayed_ids, request_id=request_id, **(details or {}))
    return BulkReplayResult(
        matched=len(matched_ids),
        replayed=len(rows),
        skipped=len(matched_ids) - len(rows),
        replayed_ids=replayed_ids,
    )


def _row_dict(instance: Model) -> dict[str, Any]:
    return {f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields}


@dataclass(frozen=True)
class DryRunResult:
    raw_event_id: int
    rows: dict[str, list[dict[str, Any]]]
    state: str
    reason: str | None


class _Rollback(Exception):
    pass


def raw_event_replay_dry_run(*, raw_event_id: int) -> DryRunResult:
    """Normalize the row in a transaction that is rolled back; the typed rows it would write.

    The rows are read back (by `raw_event_id`) before the rollback, so they are what the writer
    upserted. A copy identical to the stored one is not rewritten and so does not show. Nothing
    persists: not the rows, not the row's state, not a connection the normalizer would create;
    after-commit work (nudges, backfills) is never scheduled.
    """
    raw_event = RawEvent.objects.filter(pk=raw_event_id).first()
    if raw_event is None:
        raise _error(f"Raw event {raw_event_id} does not exist.", RAW_EVENT_NOT_FOUND, 404)
    rows: dict[str, list[dict[str, Any]]] = {}
    state: str = RawEventState.PROCESSED
    reason: str | None = None
    try:
        with transaction.atomic():
            try:
                outcome = normalizer_for(raw_event.event_type)(event_context(raw_event))
                state, reason = outcome.state, outcome.reason
            except BadData as exc:
                state, reason = RawEventState.DEAD, f"bad_data: {exc}"
            for model in TYPED_TABLES:
                written = [_row_dict(row) for row in model._default_manager.filter(raw_event_id=raw_event_id)]
                if written:
                    rows[model._meta.db_table] = written
            raise _Rollback
    except _Rollback:
        pass
    return DryRunResult(raw_event_id=raw_event_id, rows=rows, state=state, reason=reason)


# Reading -----------------------------------------------------------------------------------------


def raw_event_detail(*, raw_event_id: int) -> dict[str, Any]:
    """Every column; `payload` verbatim and `payload_json` parsed (null when not JSON)."""
    raw_event = RawEvent.objects.filter(pk=raw_event_id).first()
    if raw_event is None:
        raise _error(f"Raw event {raw_event_id} does not exist.", RAW_EVENT_NOT_FOUND, 404)
    detail = _row_dict(raw_event)
    try:
        detail["payload_json"] = json.loads(raw_event.payload) if raw_event.payload is not None else None
    except (ValueError, RecursionError):
        detail["payload_json"] = None
    return detail


DLQ_FIELDS = (
    "id",
    "event_type",
    "terra_user_id",
    "provider",
    "state",
    "process_error",
    "attempts",
    "received_at",
    "dead_lettered_at",
    "request_id",
    "replay_count",
)


def _decode_cursor(raw: str) -> dict[str, Any]:
    body = pagination.decode_cursor(raw)
    try:
        if type(body.get("id")) is not int:
            raise ValueError
        if body.get("t") is not None and parse_datetime(body["t"]) is None:
            raise ValueError
    except (ValueError, TypeError):
        raise pagination.malformed_cursor() from None
    return body


def dlq_page(*, state: str = RawEventState.DEAD, limit: int = DLQ_DEFAULT_LIMIT, cursor: str | None = None) -> dict:
    """Dead rows newest first (by `dead_lettered_at`, the DLQ index), or parked rows by id."""
    rows = RawEvent.objects.filter(state=state).only(*DLQ_FIELDS)
    position = _decode_cursor(cursor) if cursor else None
    if state == RawEventState.DEAD:
        # DESC puts NULLs first, as the index does: a dead row without its time sorts first.
        rows = rows.order_by("-dead_lettered_at", "-id")
        if position is not None:
            ts = parse_datetime(position["t"]) if position.get("t") else None
            if ts is None:
                rows = rows.filter(
                    Q(dead_lettered_at__isnull=True, id__lt=position["id"]) | Q(dead_lettered_at__isnull=False)
                )
            else:
                rows = rows.filter(Q(dead_lettered_at__lt=ts) | Q(dead_lettered_at=ts, id__lt=position["id"]))
    else:
        rows = rows.order_by("-id")
        if position is not None:
            rows = rows.filter(id__lt=position["id"])
    page = list(rows[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    next_cursor = None
    if more and page:
        last = page[-1]
        next_cursor = pagination.encode_cursor(
            {"id": last.pk, "t": last.dead_lettered_at.isoformat() if last.dead_lettered_at else None}
        )
    return {"data": [{name: getattr(row, name) for name in DLQ_FIELDS} for row in page], "next_cursor": next_cursor}


# Health ------------------------------------------------------------------------------------------


def queue_depths() -> tuple[int | None, int | None]:
    """LLEN of terra-events and terra-events-dlq on the broker; (None, None) when Redis is down."""
    timeout = settings.AMY_BROKER_TIMEOUT_SECONDS
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.llen(NORMALIZE_QUEUE)
            pipe.llen(DLQ_QUEUE)
            queue_depth, dlq_depth = pipe.execute()
    except (RedisError, OSError) as exc:
        logger.warning("admin healthz: Redis not answering: %s", type(exc).__name__)
        return None, None
    finally:
        client.close()
    return int(queue_depth), int(dlq_depth)


def ops_counters() -> dict[str, Any]:
    """The /admin/healthz counters. Raises DatabaseError when the database is down.

    The ledger's counts come from one pass with conditional aggregates. `raw_events_errored` and
    `raw_events_dead_lettered` are both the current DLQ (`dead`): replaying takes a row out.
    """
    ledger = RawEvent.objects.aggregate(
        total=Count("id"),
        unprocessed=Count("id", filter=Q(state__in=UNPROCESSED_STATES)),
        dead=Count("id", filter=Q(state=RawEventState.DEAD)),
        parked=Count("id", filter=Q(state=RawEventState.PARKED)),
        skipped=Count("id", filter=Q(state=RawEventState.SKIPPED)),
        last_hour=Count("id", filter=Q(received_at__gte=Now() - timedelta(hours=1))),
    )
    counters: dict[str, Any] = {
        "users": User.objects.count(),
        "active_connections": TerraConnection.objects.filter(status=ConnectionStatus.ACTIVE).count(),
        "raw_events_total": ledger["total"],
        "raw_events_unprocessed": ledger["unprocessed"],
        "raw_events_errored": ledger["dead"],
        "raw_events_dead_lettered": ledger["dead"],
        "raw_events_last_hour": ledger["last_hour"],
        "daily_summary": DailySummary.objects.count(),
        "activities": Activity.objects.count(),
        "sleep_sessions": SleepSession.objects.count(),
        "biomarkers": Biomarker.objects.count(),
        "lab_uploads": LabUpload.objects.count(),
        "raw_events_parked": ledger["parked"],
        "raw_events_skipped": ledger["skipped"],
    }
    queue_depth, dlq_depth = queue_depths()
    counters["queue_depth"] = queue_depth
    counters["dlq_depth"] = dlq_depth
    counters["ok"] = (
        counters["raw_events_unprocessed"] <= UNHEALTHY_UNPROCESSED
        and counters["raw_events_errored"] <= UNHEALTHY_ERRORED
        and queue_depth is not None
    )
    return counters


# Users -------------------------------------------------------------------------------------------


# The snapshot's traces: the newest USER_TRACES_LIMIT trace rows that name the user or belong to the
# journey (webhook and worker) of one of the user's newest USER_TRACES_LEDGER_ROWS ledger rows per
# Terra user. The webhook and the worker trace by request and raw event id, rarely by user id, so the
# user_id column alone would leave the snapshot empty for most users.
USER_TRACES_LIMIT = 50
USER_TRACES_LEDGER_ROWS = 50

TRACE_FIELDS = (
    "id",
    "ts",
    "request_id",
    "user_id",
    "terra_user_id",
    "raw_event_id",
    "level",
    "event",
    "message",
    "data",
    "duration_ms",
    "error_name",
    "error_stack",
)


def user_recent_traces(*, user_id: str, terra_user_ids: list[str]) -> list[dict[str, Any]]:
    """The user's newest trace rows, newest first, at most USER_TRACES_LIMIT.

    Every part is an index scan: the ledger rows per Terra user come from (terra_user_id, id)
    backwards, a few at a time; the traces from the (user_id, ts), (raw_event_id, ts) and
    (request_id, ts) indexes.
    """
    raw_event_ids: set[int] = set()
    request_ids: set[str] = set()
    for terra_user_id in terra_user_ids:
        rows = (
            RawEvent.objects.filter(terra_user_id=terra_user_id)
            .order_by("-id")
            .values_list("id", "request_id")[:USER_TRACES_LEDGER_ROWS]
        )
        for raw_event_id, request_id in rows:
            raw_event_ids.add(raw_event_id)
            if request_id:
                request_ids.add(request_id)
    condition = Q(user_id=user_id)
    if raw_event_ids:
        condition |= Q(raw_event_id__in=sorted(raw_event_ids))
    if request_ids:
        condition |= Q(request_id__in=sorted(request_ids))
    rows = TraceEvent.objects.filter(condition).order_by("-ts", "-id").values(*TRACE_FIELDS)
    return list(rows[:USER_TRACES_LIMIT])


def user_snapshot(*, user_id: str) -> dict[str, Any]:
    """One user: row counts per typed table, connections, lab uploads, ledger rows by state, and
    their recent traces (newest first, at most USER_TRACES_LIMIT)."""
    user = User.objects.filter(pk=user_id).first()
    if user is None:
        raise _error(f"User {user_id} does not exist.", USER_NOT_FOUND, 404)
    counters = {model._meta.db_table: model._default_manager.filter(user_id=user_id).count() for model in TYPED_TABLES}
    counters["lab_uploads"] = LabUpload.objects.filter(user_id=user_id).count()
    by_state = dict(
        RawEvent.objects.filter(user_id=user_id).values_list("state").annotate(n=Count("id")).values_list("state", "n")
    )
    connections = [
        {
            "id": c.pk,
            "terra_user_id": c.terra_user_id,
            "provider": c.provider,
            "status": c.status,
            "scopes": c.scopes,
            "connected_at": c.connected_at,
            "disconnected_at": c.disconnected_at,
            "last_webhook_at": c.last_webhook_at,
        }
        for c in TerraConnection.objects.filter(user_id=user_id).order_by("connected_at", "id")
    ]
    traces = user_recent_traces(user_id=user_id, terra_user_ids=[str(c["terra_user_id"]) for c in connections])
    return {
        "user": {"id": user.pk, "email": user.email, "created_at": user.created_at},
        "counters": counters,
        "raw_events": {state: by_state.get(state, 0) for state in RawEventState.values},
        "connections": connections,
        "traces": traces,
        "traces_limit": USER_TRACES_LIMIT,
    }


# Commands ----------------------------------------------------------------------------------------


def ledger_stats() -> dict[str, Any]:
    """Counts by state and by event type, and the age of the oldest unprocessed row (seconds)."""
    by_state = dict(RawEvent.objects.values_list("state").annotate(n=Count("id")).values_list("state", "n"))
    by_type = dict(
        RawEvent.objects.values_list("event_type")
        .annotate(n=Count("id"))
        .order_by("event_type")
        .values_list("event_type", "n")
    )
    oldest = (
        RawEvent.objects.filter(state__in=UNPROCESSED_STATES)
        .order_by("queued_at", "id")
        .values_list("queued_at", flat=True)
        .first()
    )
    age = (timezone.now() - oldest).total_seconds() if oldest else None
    return {
        "by_state": {state: by_state.get(state, 0) for state in RawEventState.values},
        "by_type": by_type,
        "oldest_unprocessed_age_seconds": age,
    }


MANUAL_SKIP_ERROR = "skipped:manual"


def raw_events_mark_skipped(
    *, ids: list[int], actor: str, details: dict[str, Any] | None = None
) -> tuple[list[int], int]:
    """Give up on dead or parked rows (`skipped:manual`); other states are left alone.

    Returns the ids that were dead or parked and how many rows changed.
    """
    giving_up = (RawEventState.DEAD, RawEventState.PARKED)
    ids = list(RawEvent.objects.filter(pk__in=ids, state__in=giving_up).values_list("pk", flat=True))
    updated = RawEvent.objects.filter(pk__in=ids, state__in=giving_up).update(
        state=RawEventState.SKIPPED, process_error=MANUAL_SKIP_ERROR, processed_at=Now(), lease_until=None
    )
    if ids:
        _audit("raw_events_mark_skipped", actor=actor, raw_event_ids=ids, **(details or {}))
    return ids, updated
