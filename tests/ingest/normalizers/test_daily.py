"""`daily` events into `daily_summary` rows (the pure parser, no database)."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from ingest.errors import BadData
from ingest.models import DailySummary
from ingest.normalizers.daily import parse
from tests.terra import sample

COLUMNS = DailySummary.parsed_fields()


def load(name: str) -> dict[str, Any]:
    return json.loads(sample(name))


def only_row(payload: dict[str, Any]) -> dict[str, Any]:
    parsed = parse(payload)
    assert [model for model, _ in parsed.rows] == [DailySummary]
    return parsed.rows[0][1]


def test_the_daily_sample_gives_one_row_with_every_column() -> None:
    parsed = parse(load("daily"))
    assert parsed.rows == [
        (
            DailySummary,
            {
                "date": date(2026, 11, 23),
                "start_time": datetime(2026, 11, 23, tzinfo=UTC),
                "end_time": datetime(2026, 11, 24, tzinfo=UTC),
                "steps": 11894,
                "distance_meters": 9277.3,
                "floors_climbed": 9.0,
                "elevation_gain_meters": 31.0,
                "total_burned_calories": 2631.5,
                "active_calories": 919.5,
                "bmr_calories": 1712.0,
                "activity_seconds": 5280.0,
                "low_intensity_seconds": 3120.0,
                "moderate_intensity_seconds": 1380.0,
                "vigorous_intensity_seconds": 780.0,
                "inactivity_seconds": 38400.0,
                "avg_hr_bpm": 68.0,
                "max_hr_bpm": 178.0,
                "min_hr_bpm": 46.0,
                "resting_hr_bpm": 49.0,
                "avg_hrv_rmssd": None,
                "avg_hrv_sdnn": None,
                "avg_saturation_percentage": 97.0,
                "vo2max_ml_per_min_per_kg": 52.0,
                "avg_stress_level": 27.0,
                "max_stress_level": 88.0,
                "recovery_score": None,
                "activity_score": None,
                "sleep_score": 84.0,
            },
        )
    ]
    assert parsed.deletions == []
    assert parsed.warnings == []
    assert type(parsed.rows[0][1]["steps"]) is int


def test_every_column_of_the_table_but_the_shared_ones_is_in_the_row() -> None:
    assert sorted(only_row(load("daily"))) == sorted(COLUMNS)


def test_two_days_give_two_rows_with_their_dates() -> None:
    parsed = parse(load("daily_two_days"))
    rows = [values for _, values in parsed.rows]
    assert [model for model, _ in parsed.rows] == [DailySummary, DailySummary]
    assert rows[0] == {
        "date": date(2026, 11, 22),
        "start_time": datetime(2026, 11, 22, tzinfo=UTC),
        "end_time": datetime(2026, 11, 23, tzinfo=UTC),
        "steps": 6402,
        "distance_meters": 4993.6,
        "floors_climbed": 9.0,
        "elevation_gain_meters": 31.0,
        "total_burned_calories": 2210.0,
        "active_calories": 498.0,
        "bmr_calories": 1712.0,
        "activity_seconds": 5280.0,
        "low_intensity_seconds": 3120.0,
        "moderate_intensity_seconds": 1380.0,
        "vigorous_intensity_seconds": 780.0,
        "inactivity_seconds": 38400.0,
        "avg_hr_bpm": 68.0,
        "max_hr_bpm": 178.0,
        "min_hr_bpm": 46.0,
        "resting_hr_bpm": 51.0,
        "avg_hrv_rmssd": None,
        "avg_hrv_sdnn": None,
        "avg_saturation_percentage": 97.0,
        "vo2max_ml_per_min_per_kg": 52.0,
        "avg_stress_level": 35.0,
        "max_stress_level": 88.0,
        "recovery_score": None,
        "activity_score": None,
        "sleep_score": 71.0,
    }
    assert rows[1] == {
        "date": date(2026, 11, 23),
        "start_time": datetime(2026, 11, 23, tzinfo=UTC),
        "end_time": datetime(2026, 11, 24, tzinfo=UTC),
        "steps": 12011,
        "distance_meters": 9368.6,
        "floors_climbed": 9.0,
        "elevation_gain_meters": 31.0,
        "total_burned_calories": 2640.2,
        "active_calories": 928.2,
        "bmr_calories": 1712.0,
        "activity_seconds": 5280.0,
        "low_intensity_seconds": 3120.0,
        "moderate_intensity_seconds": 1380.0,
        "vigorous_intensity_seconds": 780.0,
        "inactivity_seconds": 38400.0,
        "avg_hr_bpm": 68.0,
        "max_hr_bpm": 178.0,
        "min_hr_bpm": 46.0,
        "resting_hr_bpm": 49.0,
        "avg_hrv_rmssd": None,
        "avg_hrv_sdnn": None,
        "avg_saturation_percentage": 97.0,
        "vo2max_ml_per_min_per_kg": 52.0,
        "avg_stress_level": 27.0,
        "max_stress_level": 88.0,
        "recovery_score": None,
        "activity_score": None,
        "sleep_score": 84.0,
    }
    assert parsed.warnings == []


def test_null_leaves_and_null_blocks_give_nones_and_times_without_offset_are_utc() -> None:
    parsed = parse(load("daily_nulls"))
    assert parsed.rows == [
        (
            DailySummary,
            dict.fromkeys(COLUMNS)
            | {
                "date": date(2026, 11, 23),
                "start_time": datetime(2026, 11, 23, tzinfo=UTC),
                "end_time": datetime(2026, 11, 24, tzinfo=UTC),
            },
        )
    ]
    assert parsed.warnings == []


def test_a_missing_end_time_is_none() -> None:
    payload = load("daily")
    del payload["data"][0]["metadata"]["end_time"]
    assert only_row(payload)["end_time"] is None


def test_the_date_is_the_start_time_date_as_written_in_its_own_offset() -> None:
    payload = load("daily")
    payload["data"][0]["metadata"]["start_time"] = "2026-11-23T00:00:00.000000-05:00"
    row = only_row(payload)
    assert row["date"] == date(2026, 11, 23)
    assert row["start_time"] == datetime(2026, 11, 23, tzinfo=timezone(timedelta(hours=-5)))


def test_numbers_given_as_strings_are_numbers() -> None:
    payload = load("daily")
    payload["data"][0]["distance_data"]["steps"] = "11894"
    payload["data"][0]["distance_data"]["distance_meters"] = "12.5"
    parsed = parse(payload)
    row = parsed.rows[0][1]
    assert row["steps"] == 11894
    assert type(row["steps"]) is int
    assert row["distance_meters"] == 12.5
    assert parsed.warnings == []


def test_a_value_that_is_not_a_number_becomes_none_with_a_warning_and_the_row_is_kept() -> None:
    payload = load("daily")
    payload["data"][0]["distance_data"]["distance_meters"] = "a lot"
    payload["data"][0]["heart_rate_data"]["summary"]["avg_hr_bpm"] = {"value": 68}
    parsed = parse(payload)
    row = parsed.rows[0][1]
    assert row["distance_meters"] is None
    assert row["avg_hr_bpm"] is None
    assert row["steps"] == 11894
    assert row["sleep_score"] == 84.0
    assert len(parsed.warnings) == 2
    assert parsed.warnings[0].startswith("distance_data.distance_meters: ")
    assert parsed.warnings[1].startswith("heart_rate_data.summary.avg_hr_bpm: ")


def test_a_scalar_where_a_block_is_expected_gives_nones() -> None:
    payload = load("daily")
    payload["data"][0]["heart_rate_data"] = "n/a"
    row = only_row(payload)
    assert row["avg_hr_bpm"] is None
    assert row["resting_hr_bpm"] is None


def test_empty_data_gives_no_rows() -> None:
    payload = load("daily")
    payload["data"] = []
    parsed = parse(payload)
    assert parsed.rows == []
    assert parsed.warnings == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p.update(data={"metadata": {}}), "data"),
        (lambda p: p.pop("data"), "data"),
        (lambda p: p.update(data=["not an object"]), "data[0]"),
        (lambda p: p["data"][0]["metadata"].pop("start_time"), "metadata.start_time"),
        (lambda p: p["data"][0].pop("metadata"), "metadata.start_time"),
        (lambda p: p["data"][0]["metadata"].update(start_time="yesterday"), "metadata.start_time"),
        (lambda p: p["data"][0]["metadata"].update(start_time=None), "metadata.start_time"),
    ],
)
def test_a_wrong_structure_is_bad_data_naming_the_field(change: Any, field: str) -> None:
    payload = load("daily")
    change(payload)
    with pytest.raises(BadData, match=rf"^{re.escape(field)} "):
        parse(payload)
