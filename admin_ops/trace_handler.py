"""Where trace records (from `amy.tracing`) go: a JSON line on stdout and a row in `trace_events`.

The tracer hands each record to `TraceDatabaseHandler.submit` as a plain tuple (`TRACE_FIELDS`):
an append to an in-process buffer, nothing else on the caller's thread. A background thread drains
the buffer every `flush_interval_ms` (or as soon as `batch_size` records wait), writes the batch's
JSON lines to the stream in one write, then the batch's rows with one COPY. So neither the
webhook's answer nor a worker's task waits on a trace write, and a trace costs the request only
the building of one tuple.

The handler is still a logging.Handler (installed by LOGGING on `amy.trace`, which does not
propagate): a record logged there with a `trace` dict takes the same path, and `setLevel` above
ERROR silences it. It never raises: when a write fails it says so on stderr and drops that batch's
rows (their stdout lines are already out); when the buffer is full (the database is slow or down)
new records are dropped and counted.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
from collections import deque
from datetime import UTC, datetime
from typing import IO, Any

# The tuple the tracer submits, in this order.
TRACE_FIELDS = (
    "ts",  # time.time() when the record was made
    "levelno",
    "event",
    "message",
    "request_id",
    "user_id",
    "terra_user_id",
    "raw_event_id",
    "data",  # a dict of scalars
    "duration_ms",
    "error_name",
    "error_stack",
)
TraceRecord = tuple[float, int, str, str, Any, Any, Any, Any, dict[str, Any], Any, Any, Any]

_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error"}
_LEVEL_NAMES = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARNING", logging.ERROR: "ERROR"}

_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1
_COPY_SQL = (
    "COPY trace_events (ts, request_id, user_id, terra_user_id, raw_event_id, level, event, message, data, "
    "duration_ms, error_name, error_stack) FROM STDIN"
)


class TraceDatabaseHandler(logging.Handler):
    def __init__(
        self,
        level: int = logging.NOTSET,
        *,
        batch_size: int = 1000,
        flush_interval_ms: int = 250,
        max_buffer: int = 50_000,
        stream: IO[str] | None = None,
    ) -> None:
        super().__init__(level)
        self.batch_size = batch_size
        self.flush_interval = flush_interval_ms / 1000
        self.max_buffer = max_buffer
        # Where the JSON lines go (LOGGING: stdout); None writes rows only.
        self.stream = stream
        self.dropped = 0
        self._buffer: deque[TraceRecord] = deque()
        self._wake = threading.Event()
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # A forked child (gunicorn worker, Celery pool process) starts with an empty buffer (the
        # parent writes its own) and starts its own writer on its first record.
        os.register_at_fork(after_in_child=self._after_fork)
        atexit.register(self._at_exit)

    # The tracer's entry point ----------------------------------------------------------------

    def submit(self, record: TraceRecord) -> None:
        """Buffer one record (a `TRACE_FIELDS` tuple); never raises, never waits on I/O."""
        if record[1] < self.level:
            return
        buffer = self._buffer
        if len(buffer) >= self.max_buffer:
            self.dropped += 1
            return
        buffer.append(record)
        if self._thread is None:
            self._start_thread()
        if len(buffer) >= self.batch_size:
            self._wake.set()

    # logging.Handler ---------------------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        """A record logged on `amy.trace` with a `trace` dict (the tracer itself uses submit)."""
        try:
            trace = getattr(record, "trace", None)
            if not isinstance(trace, dict):
                return
            from django.conf import settings

            if not settings.AMY_TRACING:
                return
            self.submit(
                (
                    record.created,
                    record.levelno,
                    str(trace.get("event") or ""),
                    record.getMessage(),
                    trace.get("request_id") or getattr(record, "request_id", None),
                    trace.get("user_id"),
                    trace.get("terra_user_id"),
                    trace.get("raw_event_id"),
                    trace.get("data") or {},
                    trace.get("duration_ms"),
                    trace.get("error_name"),
                    trace.get("error_stack"),
                )
            )
        except Exception:  # noqa: BLE001 - never raise into the caller
            self._say("trace record not buffered")

    def flush(self) -> None:
        """Write everything buffered now, on the calling thread (tests, shutdown)."""
        with self._flush_lock:
            while self._buffer:
                batch = [self._buffer.popleft() for _ in range(min(len(self._buffer), self.batch_size))]
                self._write_lines(batch)
                try:
                    self._write(batch)
                except Exception as exc:  # noqa: BLE001 - a lost trace never fails anything
                    self._say(f"trace write failed, {len(batch)} records dropped: {type(exc).__name__}: {exc}")
                    _discard_connection()

    # internals ---------------------------------------------------------------------------------

    def _write_lines(self, batch: list[TraceRecord]) -> None:
        """The batch's JSON lines, in one write (the shape amy.logging.JsonFormatter gives other logs)."""
        stream = self.stream
        if stream is None:
            return
        try:
            stream.write("".join(_json_line(record) for record in batch))
            stream.flush()
        except Exception as exc:  # noqa: BLE001 - a lost line never fails anything
            self._say(f"trace lines not written: {type(exc).__name__}: {exc}")

    def _write(self, batch: list[TraceRecord]) -> None:
        """The batch's rows in trace_events, with one COPY on this thread's connection."""
        from django.db import connection, transaction

        rows = [_row(record) for record in batch]
        connection.ensure_connection()
        if connection.in_atomic_block:
            # A caller's transaction (tests): a failed COPY must not abort it.
            with transaction.atomic():
                _copy(connection.connection, rows)
        else:
            _copy(connection.connection, rows)

    def _start_thread(self) -> None:
        with self._flush_lock:
            if self._thread is not None:
                return
            self._wake = threading.Event()
            self._thread = threading.Thread(target=self._run, name="trace-writer", daemon=True)
            self._thread.start()

    def _after_fork(self) -> None:
        self._buffer = deque()
        self._thread = None
        self._flush_lock = threading.Lock()
        self.dropped = 0

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            if not self._buffer:
                # Idle: do not hold a database session open for nothing. Under load the
                # connection stays open from batch to batch (a new session costs more than a COPY).
                _close_connection()
                continue
            self.flush()
            if self.dropped:
                self._say(f"trace buffer full, {self.dropped} records dropped")
                self.dropped = 0

    def _at_exit(self) -> None:
        try:
            if self._buffer:
                self.flush()
        except Exception:  # noqa: BLE001, S110 - shutting down
            pass

    @staticmethod
    def _say(message: str) -> None:
        try:
            sys.stderr.write(f"amy.trace: {message}\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001, S110 - nowhere left to say it
            pass


def _row(record: TraceRecord) -> tuple[Any, ...]:
    ts, levelno, event, message, request_id, user_id, terra_user_id, raw_event_id, data, duration, name, stack = record
    data_json = json.dumps(data, default=str)
    if "\\u0000" in data_json:  # jsonb refuses NUL; rare, so only then the slow way
        data_json = json.dumps(_without_nul(data), default=str)
    return (
        datetime.fromtimestamp(ts, tz=UTC),
        _text(request_id, 128),
        _text(user_id, 255),
        _text(terra_user_id, 255),
        raw_event_id if type(raw_event_id) is int and _BIGINT_MIN <= raw_event_id <= _BIGINT_MAX else None,
        _LEVELS.get(levelno) or logging.getLevelName(levelno).lower()[:10],
        _text(event, 100),
        _text(message, 1000),
        data_json,
        duration,
        _text(name, 255),
        _text(stack, 100_000),
    )


def _json_line(record: TraceRecord) -> str:
    ts, levelno, event, message, request_id, user_id, terra_user_id, raw_event_id, data, duration, name, stack = record
    trace: dict[str, Any] = {
        "event": event,
        "request_id": request_id,
        "user_id": user_id,
        "terra_user_id": terra_user_id,
        "raw_event_id": raw_event_id,
        "data": data,
    }
    if duration is not None:
        trace["duration_ms"] = duration
    if name is not None:
        trace["error_name"] = name
        trace["error_stack"] = stack
    line = {
        "level": _LEVEL_NAMES.get(levelno) or logging.getLevelName(levelno),
        "logger": "amy.trace",
        "message": message,
        "request_id": request_id,
        "trace": trace,
        "ts": datetime.fromtimestamp(ts, tz=UTC).isoformat(),
    }
    return json.dumps(line, default=str) + "\n"


def _copy(raw_connection: Any, rows: list[tuple[Any, ...]]) -> None:
    with raw_connection.cursor() as cursor, cursor.copy(_COPY_SQL) as copy:
        for row in rows:
            copy.write_row(row)


def _close_connection() -> None:
    try:
        from django.db import connection

        if connection.connection is not None:
            connection.close()
    except Exception:  # noqa: BLE001, S110 - closing an idle connection is best effort
        pass


def _discard_connection() -> None:
    # After a failed write the session may be broken; the next batch opens a fresh one. Not on a
    # caller's thread inside its transaction (tests): that connection is not ours to close.
    try:
        from django.db import connection

        if not connection.in_atomic_block:
            connection.close()
    except Exception:  # noqa: BLE001, S110 - best effort
        pass


def _text(value: Any, limit: int) -> str | None:
    # PostgreSQL text cannot hold NUL: one such character would fail the whole batch's COPY.
    if value is None:
        return None
    text = str(value)[:limit]
    return text.replace("\x00", "") if "\x00" in text else text


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(str(k)): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


def trace_handler() -> TraceDatabaseHandler | None:
    """The installed handler (for tests and shutdown hooks), if LOGGING installed one."""
    for handler in logging.getLogger("amy.trace").handlers:
        if isinstance(handler, TraceDatabaseHandler):
            return handler
    return None
