"""One way to read a body that must be a JSON object: a webhook's, a ping-mode payload fetched
from Terra's bucket, a ledger row's payload. Each caller decides what a refusal means (400 for
the webhook, bad data for the worker)."""

from __future__ import annotations

import json
from typing import Any


class NotAJsonObject(ValueError):
    """`reason`: `not JSON: <why>` or `not a JSON object`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_json_object(data: bytes | str) -> tuple[str, dict[str, Any]]:
    """(the text, the object) of a UTF-8 JSON object; NotAJsonObject otherwise."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise NotAJsonObject(f"not JSON: {type(exc).__name__}") from exc
    if not isinstance(value, dict):
        raise NotAJsonObject("not a JSON object")
    return text, value
