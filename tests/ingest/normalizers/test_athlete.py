"""`athlete` events into the `athletes` row (the pure parser, no database)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from ingest.errors import BadData
from ingest.models import Athlete
from ingest.normalizers.athlete import parse
from tests.terra import sample

COLUMNS = set(Athlete.parsed_fields())


def load(name: str) -> dict[str, Any]:
    return json.loads(sample(name))


def only_row(payload: dict[str, Any]) -> dict[str, Any]:
    parsed = parse(payload)
    assert [model for model, _ in parsed.rows] == [Athlete]
    assert parsed.deletions == []
    row = parsed.rows[0][1]
    assert set(row) == COLUMNS
    return row


def test_the_athlete_sample_gives_one_row_without_names() -> None:
    parsed = parse(load("athlete"))
    assert parsed.rows == [(Athlete, {"sex": "female", "date_of_birth": date(1992, 5, 17), "age": 34, "country": "GB"})]
    assert parsed.deletions == []
    assert parsed.warnings == []
    assert sorted(COLUMNS) == ["age", "country", "date_of_birth", "sex"]  # no names, email, city or bio


def test_lone_surrogates_in_names_do_not_matter() -> None:
    parsed = parse(load("unicode_lone_surrogate"))
    assert parsed.rows == [(Athlete, {"sex": None, "date_of_birth": None, "age": None, "country": None})]
    assert parsed.warnings == []


def test_date_of_birth_as_a_timestamp_and_age_as_a_string() -> None:
    payload = load("athlete")
    payload["athlete"].update(date_of_birth="1992-05-17T00:00:00.000000-03:30", age="34")
    row = only_row(payload)
    assert (row["date_of_birth"], row["age"]) == (date(1992, 5, 17), 34)


def test_unusable_values_become_null_with_warnings() -> None:
    payload = load("athlete")
    payload["athlete"].update(date_of_birth="17/05/1992", age=2**40, sex={"x": 1}, country="G\x00B")
    parsed = parse(payload)
    assert parsed.rows[0][1] == {"sex": None, "date_of_birth": None, "age": None, "country": "GB"}
    assert [warning.split(":")[0] for warning in parsed.warnings] == [
        "athlete.age",
        "athlete.sex",
        "athlete.date_of_birth",
    ]


def test_text_longer_than_its_column_is_cut() -> None:
    payload = load("athlete")
    payload["athlete"]["country"] = "X" * 100
    assert only_row(payload)["country"] == "X" * Athlete._meta.get_field("country").max_length


@pytest.mark.parametrize("athlete", [None, "x", [], 1])
def test_an_athlete_that_is_not_an_object_is_bad_data(athlete: Any) -> None:
    payload = load("athlete")
    payload["athlete"] = athlete
    with pytest.raises(BadData, match=r"^athlete "):
        parse(payload)


def test_a_missing_athlete_is_bad_data() -> None:
    payload = load("athlete")
    del payload["athlete"]
    with pytest.raises(BadData, match=r"^athlete "):
        parse(payload)
