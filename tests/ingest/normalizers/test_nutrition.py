"""`nutrition` events into `nutrition_daily` rows (the pure parser, no database)."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

import pytest

from ingest.errors import BadData
from ingest.models import NutritionDaily
from ingest.normalizers.nutrition import parse
from tests.terra import sample

COLUMNS = NutritionDaily.parsed_fields()


def load() -> dict[str, Any]:
    return json.loads(sample("nutrition"))


def test_the_nutrition_sample_gives_the_day_totals() -> None:
    parsed = parse(load())
    assert parsed.rows == [
        (
            NutritionDaily,
            {
                # 2026-11-23T00:00:00-05:00: the date as written, not the UTC date
                "date": date(2026, 11, 23),
                "calories": 2104.0,
                "protein_g": 131.5,
                "carbohydrates_g": 228.0,
                "fat_g": 71.2,
                "fiber_g": 31.0,
                "sugar_g": 64.0,
                "water_ml": 2250.0,
            },
        )
    ]
    assert parsed.deletions == []
    assert parsed.warnings == []
    assert sorted(parsed.rows[0][1]) == sorted(COLUMNS)


def test_a_late_evening_start_time_keeps_its_own_date() -> None:
    payload = load()
    payload["data"][0]["metadata"]["start_time"] = "2026-11-23T23:30:00.000000-05:00"
    assert parse(payload).rows[0][1]["date"] == date(2026, 11, 23)


def test_a_missing_summary_gives_a_row_of_nones() -> None:
    payload = load()
    payload["data"][0]["summary"] = None
    parsed = parse(payload)
    assert parsed.rows == [(NutritionDaily, dict.fromkeys(COLUMNS) | {"date": date(2026, 11, 23)})]
    assert parsed.warnings == []


def test_numbers_given_as_strings_are_numbers() -> None:
    payload = load()
    payload["data"][0]["summary"]["macros"]["protein_g"] = "12.5"
    payload["data"][0]["summary"]["water_ml"] = " 1500 "
    parsed = parse(payload)
    assert parsed.rows[0][1]["protein_g"] == 12.5
    assert parsed.rows[0][1]["water_ml"] == 1500.0
    assert parsed.warnings == []


def test_a_value_that_is_not_a_number_becomes_none_with_a_warning_and_the_row_is_kept() -> None:
    payload = load()
    payload["data"][0]["summary"]["macros"]["fat_g"] = "some"
    parsed = parse(payload)
    row = parsed.rows[0][1]
    assert row["fat_g"] is None
    assert row["calories"] == 2104.0
    assert len(parsed.warnings) == 1
    assert parsed.warnings[0].startswith("summary.macros.fat_g: ")


def test_empty_data_gives_no_rows() -> None:
    payload = load()
    payload["data"] = []
    assert parse(payload).rows == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p.update(data={}), "data"),
        (lambda p: p.update(data=[[]]), "data[0]"),
        (lambda p: p["data"][0]["metadata"].pop("start_time"), "metadata.start_time"),
        (lambda p: p["data"][0]["metadata"].update(start_time="23/11/2026"), "metadata.start_time"),
    ],
)
def test_a_wrong_structure_is_bad_data_naming_the_field(change: Any, field: str) -> None:
    payload = load()
    change(payload)
    with pytest.raises(BadData, match=rf"^{re.escape(field)} "):
        parse(payload)
