"""Paged lists' `limit` and opaque `cursor` (docs/api.md, "Pagination of lists"): one parser and one
codec for every list, so that every list refuses a bad value the same way.

A cursor is URL-safe base64 (unpadded) of a compact JSON object; what the object holds is each
list's own business, checked by the list after decode_cursor().
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from amy.errors import ApiError, invalid_field

_LIMIT_CHARS = re.compile(r"[0-9]{1,6}")
_CURSOR_CHARS = re.compile(r"[A-Za-z0-9_-]+")
MAX_CURSOR_CHARS = 4096


def parse_limit(raw: str | None, *, default: int, maximum: int) -> int:
    """`limit` from a query string: `default` when absent or empty, else an integer in 1..maximum."""
    if raw is None or raw == "":
        return default
    if not _LIMIT_CHARS.fullmatch(raw) or not 1 <= int(raw) <= maximum:
        raise invalid_field("limit", f"limit must be an integer from 1 to {maximum}.")
    return int(raw)


def malformed_cursor(message: str = "The cursor is malformed.") -> ApiError:
    return invalid_field("cursor", message)


def encode_cursor(body: dict[str, Any]) -> str:
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(raw: str) -> dict[str, Any]:
    """The JSON object inside a cursor; 400 `invalid_field` (`cursor`) when it is not one."""
    try:
        if len(raw) > MAX_CURSOR_CHARS or not _CURSOR_CHARS.fullmatch(raw):
            raise ValueError
        body = json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True))
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError):
        raise malformed_cursor() from None
    if not isinstance(body, dict):
        raise malformed_cursor()
    return body
