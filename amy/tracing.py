"""The tracer: `start(event)` → `end(**extra)` / `fail(exc)`, and `info/warn/error`.

Every trace is one record: a JSON line on stdout and a row in `trace_events`, both written by the
handler LOGGING installs on the `amy.trace` logger (admin_ops.trace_handler) from its background
thread. The tracer hands the record over as a plain tuple (no LogRecord, no formatter on the
caller's thread: tracing must cost the webhook little, see docs/performance.md); without that handler it falls
back to an ordinary log record on `amy.trace`. The request id comes from the context unless
given; ids are attached as given. It never raises, and it records no secrets or raw bodies: only
scalar values, short strings, and no key that names a secret, a signature, a body or a payload.

`AMY_TRACING = False` makes every call a no-op (for measuring the tracer's cost).
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from typing import Any

from django.conf import settings

from amy.request_context import current_request_id

TRACE_LOGGER = "amy.trace"
_logger = logging.getLogger(TRACE_LOGGER)

_MAX_TEXT = 200
_MAX_STACK = 4000
_MAX_KEYS = 30
_FORBIDDEN_KEY = re.compile(r"secret|signature|token|password|passwd|key|authorization|cookie|payload|body", re.I)
_ID_FIELDS = ("request_id", "user_id", "terra_user_id", "raw_event_id")


def _enabled() -> bool:
    return bool(settings.AMY_TRACING)


# Key -> may it be recorded; the same few keys come back on every request, so the pattern runs
# once per key, not once per record. Bounded: a caller inventing keys cannot grow it for ever.
_key_allowed: dict[str, bool] = {}


def _allowed(key: str) -> bool:
    allowed = _key_allowed.get(key)
    if allowed is None:
        allowed = _FORBIDDEN_KEY.search(key) is None
        if len(_key_allowed) < 1000:
            _key_allowed[key] = allowed
    return allowed


def _clean(data: dict[str, Any]) -> dict[str, Any]:
    """Scalars only, strings cut short, secret-looking keys dropped."""
    out: dict[str, Any] = {}
    for key, value in list(data.items())[:_MAX_KEYS] if len(data) > _MAX_KEYS else data.items():
        if not _allowed(key):
            continue
        if value is None or isinstance(value, bool | int | float):
            out[key] = value
        elif isinstance(value, str):
            out[key] = value[:_MAX_TEXT]
        else:
            out[key] = str(value)[:_MAX_TEXT]
    return out


def _sink() -> Any:
    """The installed trace handler's `submit`, or None (looked up each time: LOGGING may be
    configured again, e.g. by tests; the logger has one or two handlers)."""
    for handler in _logger.handlers:
        submit = getattr(handler, "submit", None)
        if submit is not None:
            return submit
    return None


def _emit(
    level: int,
    event: str,
    message: str,
    ids: dict[str, Any],
    data: dict[str, Any],
    at: float | None = None,
    **fields: Any,
) -> None:
    try:
        request_id = ids.get("request_id") or current_request_id.get()
        submit = _sink()
        if submit is not None:
            submit(
                (
                    at or time.time(),
                    level,
                    event[:100],
                    message or event,
                    request_id,
                    ids.get("user_id"),
                    ids.get("terra_user_id"),
                    ids.get("raw_event_id"),
                    _clean(data) if data else {},
                    fields.get("duration_ms"),
                    fields.get("error_name"),
                    fields.get("error_stack"),
                )
            )
            return
        trace = {
            "event": event[:100],
            "request_id": request_id,
            "user_id": ids.get("user_id"),
            "terra_user_id": ids.get("terra_user_id"),
            "raw_event_id": ids.get("raw_event_id"),
            "data": _clean(data),
            **fields,
        }
        _logger.log(level, message or event, extra={"trace": trace})
    except Exception:  # noqa: BLE001, S110 - a tracer never fails its caller
        pass


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    ids = {name: kwargs.pop(name) for name in _ID_FIELDS if name in kwargs}
    return ids, kwargs


class Span:
    """One traced operation; `end()` or `fail()` closes it (once; later calls do nothing).

    A held span (`start(..., held=True)`) says its start only when it closes, with the time it
    started: work that may be rolled back and done again leaves no trace of the undone attempt.
    """

    __slots__ = ("_closed", "_held_start", "_started", "event", "ids")

    def __init__(
        self, event: str, ids: dict[str, Any], held_start: tuple[str, dict[str, Any], float] | None = None
    ) -> None:
        self.event = event
        self.ids = ids
        self._started = time.perf_counter()
        self._closed = False
        self._held_start = held_start

    def _close(self) -> bool:
        if self._closed or not _enabled():
            return False
        self._closed = True
        if self._held_start is not None:
            message, data, at = self._held_start
            _emit(logging.INFO, f"{self.event}_start", message, self.ids, data, at=at)
        return True

    def _duration_ms(self) -> float:
        return round((time.perf_counter() - self._started) * 1000, 3)

    def set(self, **ids: Any) -> Span:
        """Attach ids learned during the operation (e.g. the raw_event_id once stored)."""
        for name in _ID_FIELDS:
            if ids.get(name) is not None:
                self.ids[name] = ids[name]
        return self

    def end(self, message: str = "", **extra: Any) -> None:
        if not self._close():
            return
        ids, data = _split(dict(extra))
        self.set(**ids)
        _emit(logging.INFO, f"{self.event}_complete", message, self.ids, data, duration_ms=self._duration_ms())

    def fail(self, exc: BaseException, message: str = "", **extra: Any) -> None:
        if not self._close():
            return
        try:
            ids, data = _split(dict(extra))
            self.set(**ids)
            stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-_MAX_STACK:]
            _emit(
                logging.ERROR,
                f"{self.event}_failed",
                message or f"{type(exc).__name__}: {exc}"[:_MAX_TEXT],
                self.ids,
                data,
                duration_ms=self._duration_ms(),
                error_name=type(exc).__name__,
                error_stack=stack,
            )
        except Exception:  # noqa: BLE001, S110 - a tracer never fails its caller
            pass


class _NoSpan(Span):
    def end(self, message: str = "", **extra: Any) -> None:
        return None

    def fail(self, exc: BaseException, message: str = "", **extra: Any) -> None:
        return None


def start(event: str, message: str = "", *, held: bool = False, **kwargs: Any) -> Span:
    """Write `<event>_start` (or, `held`, keep it for when the span closes) and return the span;
    ids (request_id, user_id, terra_user_id, raw_event_id) are keyword arguments, anything else
    goes to `data`."""
    ids, data = _split(kwargs)
    if not _enabled():
        return _NoSpan(event, ids)
    if held:
        return Span(event, ids, held_start=(message, data, time.time()))
    _emit(logging.INFO, f"{event}_start", message, ids, data)
    return Span(event, ids)


def info(event: str, message: str = "", **kwargs: Any) -> None:
    if _enabled():
        ids, data = _split(kwargs)
        _emit(logging.INFO, event, message, ids, data)


def warn(event: str, message: str = "", **kwargs: Any) -> None:
    if _enabled():
        ids, data = _split(kwargs)
        _emit(logging.WARNING, event, message, ids, data)


def error(event: str, message: str = "", **kwargs: Any) -> None:
    if _enabled():
        ids, data = _split(kwargs)
        _emit(logging.ERROR, event, message, ids, data)
