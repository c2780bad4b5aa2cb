"""`activity` events into `activities` rows (the pure parser, no database)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ingest.errors import BadData
from ingest.models import Activity
from ingest.normalizers.activity import parse
from tests.terra import sample

COLUMNS = set(Activity.parsed_fields())


def load(name: str) -> dict[str, Any]:
    return json.loads(sample(name))


def only_row(payload: dict[str, Any]) -> dict[str, Any]:
    parsed = parse(payload)
    assert [model for model, _ in parsed.rows] == [Activity]
    assert parsed.deletions == []
    row = parsed.rows[0][1]
    assert set(row) == COLUMNS
    return row


def test_the_activity_sample_gives_one_row_with_every_column() -> None:
    parsed = parse(load("activity"))
    assert parsed.rows == [
        (
            Activity,
            {
                "summary_id": "21458873012",
                "name": "Morning Run",
                "activity_type": 8,
                "start_time": datetime(2026, 11, 23, 7, 4, 11, tzinfo=UTC),
                "end_time": datetime(2026, 11, 23, 7, 52, 46, tzinfo=UTC),
                "duration_seconds": 2915.0,
                "active_seconds": 2915.0,
                "distance_meters": 8237.4,
                "steps": 7912,
                "elevation_gain_meters": 61.0,
                "total_burned_calories": 612.0,
                "active_calories": 531.0,
                "avg_hr_bpm": 151.0,
                "max_hr_bpm": 178.0,
                "avg_speed_meters_per_second": 2.83,
                "avg_pace_minutes_per_kilometer": 5.89,
                "avg_cadence_rpm": 163.0,
                "avg_watts": 287.0,
                "max_watts": 402.0,
                "vo2max_ml_per_min_per_kg": 52.0,
                "device_name": "Forerunner 965",
                "deleted": False,
            },
        )
    ]
    assert set(parsed.rows[0][1]) == COLUMNS
    assert parsed.deletions == []
    assert parsed.warnings == []


def test_empty_data_gives_nothing() -> None:
    parsed = parse(load("activity_empty_data"))
    assert (parsed.rows, parsed.deletions, parsed.warnings) == ([], [], [])


def test_the_odd_sample_parses_exactly() -> None:
    payload = load("unicode_odd")
    row = only_row(payload)
    assert row == {
        "summary_id": "9007199254740993",  # above 2^53: kept as the exact text
        "name": payload["data"][0]["metadata"]["name"],
        "activity_type": 0,  # a real value, not a missing one
        "start_time": datetime(2026, 11, 23, 6, 0, 0, 123456, tzinfo=timezone(timedelta(hours=5, minutes=45))),
        "end_time": datetime(2026, 11, 23, 5, 41, 10, tzinfo=timezone(-timedelta(hours=3, minutes=30))),
        # 00:15:00.123456Z to 09:11:10Z
        "duration_seconds": 32169.876544,
        "active_seconds": None,
        "distance_meters": 1000.0,
        "steps": 0,
        "elevation_gain_meters": -0.0,
        "total_burned_calories": -12.5,
        "active_calories": 0.0,
        "avg_hr_bpm": 0.0,
        "max_hr_bpm": 255.0,
        "avg_speed_meters_per_second": None,
        "avg_pace_minutes_per_kilometer": None,
        "avg_cadence_rpm": None,
        "avg_watts": None,
        "max_watts": None,
        "vo2max_ml_per_min_per_kg": None,
        "device_name": "Étude — Forerunner® 965",
        "deleted": False,
    }
    assert row["start_time"] == datetime(2026, 11, 23, 0, 15, 0, 123456, tzinfo=UTC)
    assert row["end_time"] == datetime(2026, 11, 23, 9, 11, 10, tzinfo=UTC)
    for value in row.values():
        if isinstance(value, str):
            assert "\x00" not in value
            value.encode("utf-8")  # storable: no lone surrogate


def test_text_is_made_storable() -> None:
    payload = load("unicode_odd")
    payload["data"][0]["metadata"]["name"] = "Run\x00 \ud83d end"
    payload["data"][0]["device_data"]["name"] = "SN\x00042"
    row = only_row(payload)
    assert row["name"] == "Run ? end"
    assert row["device_name"] == "SN042"


def test_a_summary_id_sent_as_a_number_is_kept_as_exact_text() -> None:
    payload = json.loads(sample("unicode_odd").replace(b'"9007199254740993"', b"9007199254740993"))
    assert payload["data"][0]["metadata"]["summary_id"] == 9007199254740993
    assert only_row(payload)["summary_id"] == "9007199254740993"
    payload["data"][0]["metadata"]["summary_id"] = 21458873012.0
    assert only_row(payload)["summary_id"] == "21458873012"


def test_z_offsets_no_offset_and_nine_digit_fractions() -> None:
    payload = load("activity")
    metadata = payload["data"][0]["metadata"]
    metadata["start_time"] = "2026-11-23T07:04:11.123456789Z"
    metadata["end_time"] = "2026-11-23T07:52:46"
    row = only_row(payload)
    assert row["start_time"] == datetime(2026, 11, 23, 7, 4, 11, 123456, tzinfo=UTC)
    assert row["end_time"] == datetime(2026, 11, 23, 7, 52, 46, tzinfo=UTC)
    assert row["duration_seconds"] == pytest.approx(2914.876544)


def test_values_out_of_range_or_not_numbers_become_null_with_warnings() -> None:
    payload = load("activity")
    item = payload["data"][0]
    item["metadata"]["type"] = 2**40  # beyond the 32-bit column
    item["distance_data"]["summary"]["steps"] = 12345678901234567890  # beyond int64
    item["distance_data"]["summary"]["distance_meters"] = "8237.4"  # a number as a string
    item["heart_rate_data"]["summary"]["avg_hr_bpm"] = "n/a"
    item["heart_rate_data"]["summary"]["max_hr_bpm"] = True
    item["power_data"]["avg_watts"] = "Infinity"
    item["movement_data"]["avg_cadence_rpm"] = {"value": 163}
    item["device_data"]["name"] = ["Forerunner"]
    del item["metadata"]["end_time"]
    row = only_row(payload)
    assert row["activity_type"] is None
    assert row["steps"] is None
    assert row["distance_meters"] == 8237.4
    assert row["avg_hr_bpm"] is None
    assert row["max_hr_bpm"] is None
    assert row["avg_watts"] is None
    assert row["avg_cadence_rpm"] is None
    assert row["device_name"] is None
    assert row["end_time"] is None
    assert row["duration_seconds"] is None
    assert row["total_burned_calories"] == 612.0  # the rest of the row is kept
    warned = parse(payload).warnings
    for path in (
        "metadata.type",
        "distance_data.summary.steps",
        "heart_rate_data.summary.avg_hr_bpm",
        "heart_rate_data.summary.max_hr_bpm",
        "power_data.avg_watts",
        "movement_data.avg_cadence_rpm",
        "device_data.name",
    ):
        assert any(warning.startswith(f"{path}:") for warning in warned), path
    assert len(warned) == 7


def test_null_and_missing_blocks_give_nulls() -> None:
    payload = load("activity")
    item = payload["data"][0]
    for block in ("distance_data", "calories_data", "movement_data", "power_data", "device_data"):
        item[block] = None
    item["heart_rate_data"] = {"summary": None}
    del item["oxygen_data"], item["active_durations_data"]
    row = only_row(payload)
    kept = {"summary_id", "name", "activity_type", "start_time", "end_time", "duration_seconds", "deleted"}
    assert all(row[column] is None for column in COLUMNS - kept)
    assert row["activity_type"] == 8


def test_upload_type_4_is_a_tombstone_row_of_that_summary_id_with_no_values() -> None:
    payload = load("activity")
    deleted = copy.deepcopy(payload["data"][0])
    deleted["metadata"] = {"summary_id": "21458870000", "upload_type": 4, "start_time": None, "type": 8}
    payload["data"].append(deleted)
    parsed = parse(payload)
    assert [(row["summary_id"], row["deleted"]) for _, row in parsed.rows] == [
        ("21458873012", False),
        ("21458870000", True),
    ]
    tombstone = parsed.rows[1][1]
    assert set(tombstone) == COLUMNS
    assert all(tombstone[column] is None for column in COLUMNS - {"summary_id", "deleted"})
    # A tombstone is written like any row, so the ordering rule applies to it.
    assert parsed.deletions == []


def test_a_deletion_as_the_only_item() -> None:
    payload = load("activity")
    payload["data"][0]["metadata"]["upload_type"] = "4"
    parsed = parse(payload)
    assert [(model, row["summary_id"], row["deleted"]) for model, row in parsed.rows] == [
        (Activity, "21458873012", True)
    ]
    assert parsed.deletions == []


@pytest.mark.parametrize("summary_id", [None, "", "  ", {"id": 1}, True, "x" * 256])
def test_a_missing_or_unusable_summary_id_is_bad_data(summary_id: Any) -> None:
    payload = load("activity")
    payload["data"][0]["metadata"]["summary_id"] = summary_id
    with pytest.raises(BadData, match=r"metadata\.summary_id"):
        parse(payload)


def test_a_missing_summary_id_key_is_bad_data() -> None:
    payload = load("activity")
    del payload["data"][0]["metadata"]["summary_id"]
    with pytest.raises(BadData, match=r"metadata\.summary_id"):
        parse(payload)


@pytest.mark.parametrize("start_time", [None, "", "yesterday", 1732345451])
def test_a_missing_or_unparseable_start_time_is_bad_data(start_time: Any) -> None:
    payload = load("activity")
    payload["data"][0]["metadata"]["start_time"] = start_time
    with pytest.raises(BadData, match=r"metadata\.start_time"):
        parse(payload)


@pytest.mark.parametrize("metadata", [None, "x", []])
def test_metadata_that_is_not_an_object_is_bad_data(metadata: Any) -> None:
    payload = load("activity")
    payload["data"][0]["metadata"] = metadata
    with pytest.raises(BadData, match=r"metadata\.summary_id"):
        parse(payload)


@pytest.mark.parametrize(
    ("data", "field"),
    [(None, r"^data "), ({"metadata": {}}, r"^data "), ("x", r"^data "), ([1], r"data\[0\]"), ([None], r"data\[0\]")],
)
def test_wrong_structures_are_bad_data(data: Any, field: str) -> None:
    payload = load("activity")
    payload["data"] = data
    with pytest.raises(BadData, match=field):
        parse(payload)
