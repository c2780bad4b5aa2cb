"""The logging handler that stores trace records (from `amy.tracing`) in `trace_events`.

Records are buffered in-process and written in bulk by a background thread, every
`flush_interval_ms` or as soon as `batch_size` records wait, so neither the webhook's answer nor a
worker's task waits on a trace write. The handler never raises: when a write fails it says so on
stderr and drops that batch; when the buffer is full (the database is slow or down) new records
are dropped and counted. Records without a `trace` attribute are ignored.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections import deque
from datetime import UTC, datetime
from typing import Any

_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error"}


class TraceDatabaseHandler(logging.Handler):
    def __init__(
        self,
        level: int = logging.NOTSET,
        *,
        batch_size: int = 200,
        flush_interval_ms: int = 200,
        max_buffer: int = 50_000,
    ) -> None:
        super().__init__(level)
        self.batch_size = batch_size
        self.flush_interval = flush_interval_ms / 1000
        self.max_buffer = max_buffer
        self.dropped = 0
        self._buffer: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._flush_lock = threading.Lock()
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        atexit.register(self._at_exit)

    # logging.Handler ---------------------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        try:
            trace = getattr(record, "trace", None)
            if not isinstance(trace, dict):
                return
            from django.conf import settings

            if not getattr(settings, "AMY_TRACING", True):
                return
            if len(self._buffer) >= self.max_buffer:
                self.dropped += 1
                return
            self._buffer.append(self._row(record, trace))
            self._ensure_thread()
            if len(self._buffer) >= self.batch_size:
                self._wake.set()
        except Exception:  # noqa: BLE001 - never raise into the caller
            self._say("trace record not buffered")

    def flush(self) -> None:
        """Write everything buffered now, on the calling thread (tests, shutdown)."""
        with self._flush_lock:
            while self._buffer:
                batch = [self._buffer.popleft() for _ in range(min(len(self._buffer), self.batch_size))]
                try:
                    self._write(batch)
                except Exception as exc:  # noqa: BLE001 - a lost trace never fails anything
                    self._say(f"trace write failed, {len(batch)} records dropped: {type(exc).__name__}: {exc}")

    # internals ---------------------------------------------------------------------------------

    @staticmethod
    def _row(record: logging.LogRecord, trace: dict[str, Any]) -> dict[str, Any]:
        raw_event_id = trace.get("raw_event_id")
        return {
            "ts": datetime.fromtimestamp(record.created, tz=UTC),
            "request_id": (trace.get("request_id") or getattr(record, "request_id", None) or None),
            "user_id": _text(trace.get("user_id"), 255),
            "terra_user_id": _text(trace.get("terra_user_id"), 255),
            "raw_event_id": raw_event_id if isinstance(raw_event_id, int) else None,
            "level": _LEVELS.get(record.levelno, record.levelname.lower()[:10]),
            "event": str(trace.get("event") or "")[:100],
            "message": record.getMessage()[:1000],
            "data": trace.get("data") or {},
            "duration_ms": trace.get("duration_ms"),
            "error_name": _text(trace.get("error_name"), 255),
            "error_stack": trace.get("error_stack"),
        }

    def _write(self, batch: list[dict[str, Any]]) -> None:
        from admin_ops.models import TraceEvent

        TraceEvent.objects.bulk_create([TraceEvent(**row) for row in batch])

    def _ensure_thread(self) -> None:
        # Started lazily, and again in a forked child (Celery prefork, gunicorn workers).
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        with self._flush_lock:
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            self._pid = os.getpid()
            self._wake = threading.Event()
            self._thread = threading.Thread(target=self._run, name="trace-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        from django.db import connections

        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            if not self._buffer:
                continue
            self.flush()
            if self.dropped:
                self._say(f"trace buffer full, {self.dropped} records dropped")
                self.dropped = 0
            # This thread's own connection: do not hold it open between batches.
            connections.close_all()

    def _at_exit(self) -> None:
        try:
            if self._buffer and self._pid == os.getpid():
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


def _text(value: Any, limit: int) -> str | None:
    return None if value is None else str(value)[:limit]


def trace_handler() -> TraceDatabaseHandler | None:
    """The installed handler (for tests and shutdown hooks), if LOGGING installed one."""
    for handler in logging.getLogger("amy.trace").handlers:
        if isinstance(handler, TraceDatabaseHandler):
            return handler
    return None
