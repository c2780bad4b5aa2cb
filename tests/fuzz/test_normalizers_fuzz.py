"""The pure parsers (ingest/normalizers/*.parse) under generated payloads.

Whatever JSON object arrives, a parser either returns rows that PostgreSQL will take as they are
(every value fits its column), or raises BadData with a short readable message naming the field.
Any other exception, or a value the database would refuse, would turn bad data into five retries
and a dead letter reading `retries_exhausted: DataError ...` instead of one clear `bad_data: ...`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pytest
from django.db import models
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ingest.errors import BadData
from ingest.models import (
    Activity,
    Athlete,
    Biomarker,
    BodyMeasurement,
    DailySummary,
    MenstruationDay,
    NutritionDaily,
    SleepSession,
)
from ingest.normalizers import activity, athlete, body, daily, labs, menstruation, nutrition, sleep
from ingest.normalizers.base import ParsedRows
from tests.fuzz.strategies import SAMPLE_PAYLOADS, SAMPLES_BY_TYPE, json_values, mutated, sample_payloads

PARSERS: dict[str, tuple[Callable[[dict[str, Any]], ParsedRows], type[models.Model]]] = {
    "daily": (daily.parse, DailySummary),
    "sleep": (sleep.parse, SleepSession),
    "activity": (activity.parse, Activity),
    "body": (body.parse, BodyMeasurement),
    "nutrition": (nutrition.parse, NutritionDaily),
    "menstruation": (menstruation.parse, MenstruationDay),
    "athlete": (athlete.parse, Athlete),
    "lab_report": (labs.parse_biomarkers, Biomarker),
}

INT_RANGES = {
    models.IntegerField: (-(2**31), 2**31 - 1),
    models.BigIntegerField: (-(2**63), 2**63 - 1),
}
MAX_MESSAGE = 500


def storable_text(value: str) -> bool:
    """PostgreSQL text takes neither NUL nor a lone surrogate (not encodable as UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def readable(message: str) -> bool:
    return bool(message.strip()) and len(message) <= MAX_MESSAGE and storable_text(message)


def column_problem(field: models.Field, value: Any) -> str | None:
    """Why PostgreSQL (through psycopg) would refuse `value` for `field`, or None."""
    if value is None:
        return None if field.null else "null in a NOT NULL column"
    if isinstance(field, models.BooleanField):
        return None if isinstance(value, bool) else "not a bool"
    for kind, (low, high) in INT_RANGES.items():
        if type(field) is kind:
            if type(value) is not int or not low <= value <= high:
                return f"{value!r} outside {kind.__name__}"
            return None
    if isinstance(field, models.FloatField):
        if not isinstance(value, float | int) or isinstance(value, bool) or not math.isfinite(value):
            return f"{value!r} is not a finite number"
        return None
    if isinstance(field, models.DateTimeField):
        if not isinstance(value, datetime) or value.tzinfo is None:
            return f"{value!r} is not an aware datetime"
        try:
            # What PostgreSQL stores and psycopg reads back: the UTC instant, years 1 to 9999.
            value.astimezone(UTC)
        except OverflowError:
            return f"{value!r} is outside years 1-9999 in UTC"
        return None
    if isinstance(field, models.DateField):
        return None if type(value) is date else f"{value!r} is not a date"
    if isinstance(field, models.CharField | models.TextField):
        if not isinstance(value, str) or not storable_text(value):
            return f"{value[:40]!r} is not storable text"
        if field.max_length is not None and len(value) > field.max_length:
            return f"{len(value)} characters over max_length {field.max_length}"
        return None
    return f"no check for {type(field).__name__}"


def assert_rows_or_bad_data(kind: str, payload: dict[str, Any]) -> None:
    parse, model = PARSERS[kind]
    try:
        parsed = parse(payload)
    except BadData as exc:
        message = str(exc)
    else:
        message = None
    if message is not None:
        assert readable(message), repr(message)[:200]
        return
    assert isinstance(parsed, ParsedRows)
    for warning in parsed.warnings:
        assert readable(warning), repr(warning)[:200]
    fields = {f.name: f for f in model._meta.concrete_fields}
    for row_model, values in [*parsed.rows, *parsed.deletions]:
        assert row_model is model
        for name, value in values.items():
            assert name in fields, name
            problem = column_problem(fields[name], value)
            assert problem is None, f"{kind} {name}: {problem}"
    for _, values in parsed.rows:
        # A row must name every NOT NULL column it cannot default.
        missing = [n for n in model.parsed_fields() if not fields[n].null and n not in values]
        assert not missing or kind == "lab_report", missing


def _kinds() -> st.SearchStrategy[str]:
    return st.sampled_from(sorted(PARSERS))


@st.composite
def parser_inputs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(_kinds())
    payload = draw(
        st.one_of(
            sample_payloads([kind]),
            sample_payloads([kind]).flatmap(lambda p: mutated(p, max_mutations=10)),
            sample_payloads(),  # another type's body under this parser
            st.dictionaries(st.sampled_from(["data", "athlete", "type", "user"]), json_values, max_size=4),
        )
    )
    if not isinstance(payload, dict):
        payload = {"data": payload}
    return kind, payload


@settings(max_examples=300)
@given(case=parser_inputs())
def test_a_parser_returns_storable_rows_or_raises_bad_data_with_a_readable_message(
    case: tuple[str, dict[str, Any]],
) -> None:
    assert_rows_or_bad_data(*case)


# Values at and past each column's limits, in every numeric and time field of every sample.
EDGE_VALUES = [
    2**31 - 1,
    2**31,
    -(2**31) - 1,
    2**63 - 1,
    2**63,
    10**30,
    1e308,
    -1e308,
    float("nan"),
    float("inf"),
    "1e999",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59.999999999",
    "\ud800",
    "a\x00b",
    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
    {"nested": {"deeper": [1, {"x": None}]}},
]


def _leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaf_paths(v, (*prefix, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaf_paths(v, (*prefix, i))]
    return [prefix]


def _set(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    copy = json.loads(json.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


EDGE_CASES = [
    (kind, name, path)
    for kind in PARSERS
    for name in SAMPLES_BY_TYPE[kind]
    for path in _leaf_paths(SAMPLE_PAYLOADS[name])
    if path and path[0] not in ("user", "new_user", "old_user")
]


@pytest.mark.parametrize("edge", range(len(EDGE_VALUES)), ids=lambda i: f"edge{i}")
def test_every_leaf_of_every_sample_at_a_column_limit_is_stored_or_bad_data(edge: int) -> None:
    for kind, name, path in EDGE_CASES:
        assert_rows_or_bad_data(kind, _set(SAMPLE_PAYLOADS[name], path, EDGE_VALUES[edge]))


@settings(max_examples=50)
@given(kind=_kinds(), depth=st.integers(100, 900))
@example(kind="daily", depth=900)
def test_deeply_nested_values_anywhere_are_stored_or_bad_data(kind: str, depth: int) -> None:
    deep: Any = 1
    for _ in range(depth):
        deep = [deep]
    for name in SAMPLES_BY_TYPE[kind][:1]:
        for path in _leaf_paths(SAMPLE_PAYLOADS[name])[:40]:
            if path:
                assert_rows_or_bad_data(kind, _set(SAMPLE_PAYLOADS[name], path, deep))
