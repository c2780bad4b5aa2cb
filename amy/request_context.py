"""The request id of the work in hand, for log lines, queue messages and error bodies."""

from __future__ import annotations

import re
from contextvars import ContextVar

from ulid import ULID

_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


def new_request_id() -> str:
    return f"req_{ULID()}"


def accept_request_id(candidate: str | None) -> str:
    """Reuse a caller's id when it is well-formed, else make a new one."""
    if candidate and _VALID_ID.fullmatch(candidate):
        return candidate
    return new_request_id()
