"""Terra `athlete` events into typed rows (pure: payload in, ParsedRows out).

The profile arrives as an `athlete` object, not a `data[]` array: one `Athlete` row per connection,
the latest delivery winning. Names, email, city, bio and the provider's user id are never
read: only sex, date of birth, age and country are kept.
"""

from __future__ import annotations

from typing import Any, cast

from django.db import models

from ingest.errors import BadData
from ingest.models import Athlete
from ingest.normalizers.base import ParsedRows
from ingest.normalizers.values import PayloadReader

_INT32 = 2**31 - 1


def _max_length(field_name: str) -> int | None:
    return cast("models.CharField[str, str]", Athlete._meta.get_field(field_name)).max_length


def parse(payload: dict[str, Any]) -> ParsedRows:
    athlete = payload.get("athlete")
    if not isinstance(athlete, dict):
        raise BadData("athlete is missing or not an object")
    reader = PayloadReader()
    parsed = ParsedRows()
    age = reader.integer(payload, "athlete", "age")
    if age is not None and abs(age) > _INT32:
        reader.warnings.append(f"athlete.age: {age!r} is not a 32-bit integer; stored as null")
        age = None
    parsed.add(
        Athlete,
        {
            "sex": reader.text(payload, "athlete", "sex", max_length=_max_length("sex")),
            # "YYYY-MM-DD" or a timestamp: the date as written.
            "date_of_birth": reader.day(payload, "athlete", "date_of_birth"),
            "age": age,
            "country": reader.text(payload, "athlete", "country", max_length=_max_length("country")),
        },
    )
    parsed.warnings = reader.warnings
    return parsed
