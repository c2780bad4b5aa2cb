"""`menstruation` events into `menstruation_days` rows (the pure parser, no database)."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

import pytest

from ingest.errors import BadData
from ingest.models import MenstruationDay
from ingest.normalizers.menstruation import parse
from tests.terra import sample

COLUMNS = MenstruationDay.parsed_fields()


def load() -> dict[str, Any]:
    return json.loads(sample("menstruation"))


def only_row(payload: dict[str, Any]) -> dict[str, Any]:
    parsed = parse(payload)
    assert [model for model, _ in parsed.rows] == [MenstruationDay]
    return parsed.rows[0][1]


def test_the_menstruation_sample_gives_one_row_with_every_column() -> None:
    parsed = parse(load())
    assert parsed.rows == [
        (
            MenstruationDay,
            {
                # 2026-11-23T00:00:00+01:00: the date as written, not the UTC date (the 22nd)
                "date": date(2026, 11, 23),
                "period_start_date": date(2026, 11, 21),
                "period_length_days": 5,
                "day_in_cycle": 3,
                "cycle_length_days": None,
                "phase": 1,
            },
        )
    ]
    assert parsed.deletions == []
    assert parsed.warnings == []
    assert sorted(parsed.rows[0][1]) == sorted(COLUMNS)


def test_phase_zero_is_a_value() -> None:
    payload = load()
    payload["data"][0]["menstruation_data"]["current_phase"] = 0
    assert only_row(payload)["phase"] == 0


def test_a_missing_menstruation_block_gives_a_row_of_nones() -> None:
    payload = load()
    payload["data"][0]["menstruation_data"] = None
    parsed = parse(payload)
    assert parsed.rows == [(MenstruationDay, dict.fromkeys(COLUMNS) | {"date": date(2026, 11, 23)})]
    assert parsed.warnings == []


def test_integers_given_as_strings_are_integers() -> None:
    payload = load()
    payload["data"][0]["menstruation_data"]["cycle_length_days"] = "28"
    payload["data"][0]["menstruation_data"]["current_phase"] = "0"
    row = only_row(payload)
    assert row["cycle_length_days"] == 28
    assert type(row["cycle_length_days"]) is int
    assert row["phase"] == 0


def test_values_that_are_not_usable_become_none_with_a_warning_and_the_row_is_kept() -> None:
    payload = load()
    payload["data"][0]["menstruation_data"]["day_in_cycle"] = "third"
    payload["data"][0]["menstruation_data"]["period_start_date"] = "last week"
    parsed = parse(payload)
    row = parsed.rows[0][1]
    assert row["day_in_cycle"] is None
    assert row["period_start_date"] is None
    assert row["period_length_days"] == 5
    assert len(parsed.warnings) == 2
    assert parsed.warnings[0].startswith("menstruation_data.period_start_date: ")
    assert parsed.warnings[1].startswith("menstruation_data.day_in_cycle: ")


def test_empty_data_gives_no_rows() -> None:
    payload = load()
    payload["data"] = []
    assert parse(payload).rows == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p.update(data=None), "data"),
        (lambda p: p.update(data=[1]), "data[0]"),
        (lambda p: p["data"][0]["metadata"].pop("start_time"), "metadata.start_time"),
        (lambda p: p["data"][0].pop("metadata"), "metadata.start_time"),
    ],
)
def test_a_wrong_structure_is_bad_data_naming_the_field(change: Any, field: str) -> None:
    payload = load()
    change(payload)
    with pytest.raises(BadData, match=rf"^{re.escape(field)} "):
        parse(payload)
