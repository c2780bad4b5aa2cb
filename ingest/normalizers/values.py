"""Reading values out of Terra payloads: never crash on a missing block, a null leaf or a number
sent as a string; record a warning (naming the field) when a value is present but unusable.

The rules: numbers given as strings are numbers; a value that is not a number where one is
expected becomes null (the rest of the row is kept); a timestamp without an offset is UTC; a day's
date is the date part of the timestamp as written; Terra's enums are integers where 0 is a value.
"""

from __future__ import annotations

import math
import re
import reprlib
from datetime import UTC, date, datetime
from typing import Any

from ingest.errors import BadData

_INT64 = 2**63 - 1
_INT32 = 2**31 - 1
# A warning shows a bounded picture of the value: repr() of a 10 MB list, or of one nested 900
# deep, would cost the whole size (or the recursion limit) to say "is not a number".
_SHOWN = reprlib.Repr(maxlevel=3, maxstring=60, maxother=60, maxlong=40, maxlist=4, maxdict=4)
_FRACTION = re.compile(r"(\.\d{6})\d+")


def _clean_text(value: str) -> str:
    # PostgreSQL text refuses NUL and lone surrogates; keep the rest of the string.
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


class PayloadReader:
    """Typed getters over nested dicts, collecting warnings for the event's trace."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def get(self, obj: Any, *path: str) -> Any:
        for key in path:
            if not isinstance(obj, dict):
                return None
            obj = obj.get(key)
        return obj

    def _warn(self, path: tuple[str, ...], value: Any, expected: str) -> None:
        shown = _SHOWN.repr(value)
        self.warnings.append(f"{'.'.join(path)}: {shown[:60]} is not {expected}; stored as null")

    def number(self, obj: Any, *path: str) -> float | None:
        value = self.get(obj, *path)
        if value is None:
            return None
        if isinstance(value, bool):
            self._warn(path, value, "a number")
            return None
        if not isinstance(value, int | float | str):
            self._warn(path, value, "a number")
            return None
        try:
            result = float(value.strip() if isinstance(value, str) else value)
        except (ValueError, OverflowError):
            self._warn(path, value, "a number")
            return None
        if not math.isfinite(result):
            self._warn(path, value, "a finite number")
            return None
        return result

    def integer(self, obj: Any, *path: str) -> int | None:
        value = self.get(obj, *path)
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > _INT64:
                self._warn(path, value, "a 64-bit integer")
                return None
            return value
        number = self.number(obj, *path)
        if number is None:
            return None
        if abs(number) > _INT64:
            self._warn(path, value, "a 64-bit integer")
            return None
        return round(number)

    def int32(self, obj: Any, *path: str) -> int | None:
        """An integer for a PostgreSQL `integer` column: beyond 32 bits it is null with a warning."""
        value = self.integer(obj, *path)
        if value is not None and abs(value) > _INT32:
            self._warn(path, value, "a 32-bit integer")
            return None
        return value

    def text(self, obj: Any, *path: str, max_length: int | None = None) -> str | None:
        value = self.get(obj, *path)
        if value is None:
            return None
        # NaN and Infinity parse from JSON as floats; "nan" is no name or id anyone sent.
        if (
            isinstance(value, bool)
            or not isinstance(value, str | int | float)
            or value in (math.inf, -math.inf)
            or value != value
        ):
            self._warn(path, value, "text")
            return None
        text = _clean_text(str(value))
        return text[:max_length] if max_length else text

    def boolean(self, obj: Any, *path: str) -> bool | None:
        value = self.get(obj, *path)
        if value is None or isinstance(value, bool):
            return value
        if value in (0, 1, "true", "false", "0", "1"):
            return value in (1, "true", "1")
        self._warn(path, value, "a boolean")
        return None

    def time(self, obj: Any, *path: str) -> datetime | None:
        value = self.get(obj, *path)
        if value is None:
            return None
        parsed = parse_timestamp(value)
        if parsed is None:
            self._warn(path, value, "an ISO 8601 time")
        return parsed

    def required_time(self, obj: Any, *path: str) -> datetime:
        parsed = parse_timestamp(self.get(obj, *path))
        if parsed is None:
            raise BadData(f"{'.'.join(path)} is missing or not an ISO 8601 time")
        return parsed

    def day(self, obj: Any, *path: str) -> date | None:
        """The calendar date as written (the first 10 characters), before any time-zone change."""
        value = self.get(obj, *path)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip()[:10])
            except ValueError:
                pass
        self._warn(path, value, "a date")
        return None

    def required_day(self, obj: Any, *path: str) -> date:
        value = self.get(obj, *path)
        parsed = self.day(obj, *path) if value is not None else None
        if parsed is None:
            raise BadData(f"{'.'.join(path)} is missing or not a date")
        return parsed


def parse_timestamp(value: Any) -> datetime | None:
    """An aware datetime from ISO 8601 text; no offset means UTC; beyond microseconds is cut.

    None also for a time whose UTC instant falls outside years 1-9999 (`0001-01-01T00:00+14:00`):
    PostgreSQL would store it, but Python cannot read it back.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = _FRACTION.sub(r"\1", value.strip())
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        parsed.astimezone(UTC)
    except OverflowError:
        return None
    return parsed


def data_items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The `data[]` records of a data event: a structure that is not a list of objects is bad data."""
    data = payload.get("data")
    if not isinstance(data, list):
        raise BadData("data is missing or not a list")
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise BadData(f"data[{index}] is not an object")
    return data
