"""`body` events into `body_measurements` rows, one per value (the pure parser, no database)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ingest.errors import BadData
from ingest.models import BodyMeasurement
from ingest.normalizers.body import parse
from tests.terra import sample

COLUMNS = set(BodyMeasurement.parsed_fields())


def load(name: str) -> dict[str, Any]:
    return json.loads(sample(name))


def rows(payload: dict[str, Any]) -> list[tuple[datetime, str, float | None, str]]:
    parsed = parse(payload)
    assert {model for model, _ in parsed.rows} <= {BodyMeasurement}
    assert parsed.deletions == []
    assert all(set(row) == COLUMNS for _, row in parsed.rows)
    return [(row["measured_at"], row["metric"], row["value"], row["unit"]) for _, row in parsed.rows]


def at(hour: int, minute: int, second: int) -> datetime:
    return datetime(2026, 11, 23, hour, minute, second, tzinfo=UTC)


def one_item(**blocks: Any) -> dict[str, Any]:
    item = {"metadata": {"start_time": "2026-11-23T00:00:00+00:00", "end_time": "2026-11-24T00:00:00+00:00"}}
    return {"type": "body", "data": [{**item, **blocks}]}


def test_the_body_sample_gives_one_row_per_measured_value() -> None:
    parsed = parse(load("body"))
    assert parsed.rows == [
        (BodyMeasurement, {"measured_at": at(7, 41, 18), "metric": "weight_kg", "value": 74.35, "unit": "kg"}),
        (BodyMeasurement, {"measured_at": at(7, 41, 18), "metric": "bmi", "value": 22.9, "unit": "kg/m2"}),
        (BodyMeasurement, {"measured_at": at(7, 41, 18), "metric": "body_fat_percentage", "value": 17.2, "unit": "%"}),
        (BodyMeasurement, {"measured_at": at(7, 41, 18), "metric": "height_cm", "value": 180.2, "unit": "cm"}),
        (BodyMeasurement, {"measured_at": at(7, 41, 18), "metric": "muscle_mass_g", "value": 58540.0, "unit": "g"}),
        (BodyMeasurement, {"measured_at": at(7, 41, 18), "metric": "bone_mass_g", "value": 3120.0, "unit": "g"}),
        (BodyMeasurement, {"measured_at": at(7, 41, 18), "metric": "water_percentage", "value": 56.4, "unit": "%"}),
        # The evening weigh-in measured only three things: no rows for the nulls.
        (BodyMeasurement, {"measured_at": at(21, 58, 2), "metric": "weight_kg", "value": 74.9, "unit": "kg"}),
        (BodyMeasurement, {"measured_at": at(21, 58, 2), "metric": "bmi", "value": 23.1, "unit": "kg/m2"}),
        (BodyMeasurement, {"measured_at": at(21, 58, 2), "metric": "body_fat_percentage", "value": 17.5, "unit": "%"}),
        (BodyMeasurement, {"measured_at": at(7, 45, 10), "metric": "systolic_bp_mmhg", "value": 118.0, "unit": "mmHg"}),
        (BodyMeasurement, {"measured_at": at(7, 45, 10), "metric": "diastolic_bp_mmhg", "value": 76.0, "unit": "mmHg"}),
        (
            BodyMeasurement,
            {"measured_at": at(7, 46, 0), "metric": "body_temperature_celsius", "value": 36.6, "unit": "degC"},
        ),
    ]
    assert all(set(row) == COLUMNS for _, row in parsed.rows)
    assert parsed.deletions == []
    assert parsed.warnings == []


def test_glucose_and_blood_oxygen_samples() -> None:
    payload = one_item(
        glucose_data={
            "blood_glucose_samples": [
                {"timestamp": "2026-11-23T08:00:00.000000+05:45", "blood_glucose_mg_per_dL": 95, "trend_arrow": 1},
                {"timestamp": "2026-11-23T09:00:00", "blood_glucose_mg_per_dL": "101.5"},
            ]
        },
        oxygen_data={
            "saturation_samples": [
                {"timestamp": "2026-11-23T03:00:00.123456789-03:30", "percentage": 97, "type": 0},
                {"timestamp": "2026-11-23T03:01:00Z", "percentage": 96},
                {"timestamp": "2026-11-23T03:02:00Z", "percentage": 61, "type": 1},  # muscle (SmO2): not SpO2
            ]
        },
    )
    assert rows(payload) == [
        (
            datetime(2026, 11, 23, 8, tzinfo=timezone(timedelta(hours=5, minutes=45))),
            "blood_glucose_mg_per_dl",
            95.0,
            "mg/dL",
        ),
        (datetime(2026, 11, 23, 9, tzinfo=UTC), "blood_glucose_mg_per_dl", 101.5, "mg/dL"),
        (
            datetime(2026, 11, 23, 3, 0, 0, 123456, tzinfo=timezone(-timedelta(hours=3, minutes=30))),
            "spo2_percentage",
            97.0,
            "%",
        ),
        (datetime(2026, 11, 23, 3, 1, tzinfo=UTC), "spo2_percentage", 96.0, "%"),
    ]
    assert parse(payload).warnings == []


def test_values_that_are_not_numbers_give_no_row_and_a_warning() -> None:
    payload = one_item(
        blood_pressure_data={
            "blood_pressure_samples": [
                {"timestamp": "2026-11-23T07:45:10Z", "systolic_bp": "high", "diastolic_bp": "76"}
            ]
        }
    )
    parsed = parse(payload)
    assert rows(payload) == [(at(7, 45, 10), "diastolic_bp_mmhg", 76.0, "mmHg")]
    assert len(parsed.warnings) == 1
    assert parsed.warnings[0].startswith("data[0].blood_pressure_data.blood_pressure_samples[0].systolic_bp:")


def test_samples_without_a_usable_time_are_skipped_with_a_warning() -> None:
    payload = one_item(
        temperature_data={
            "body_temperature_samples": [
                {"temperature_celsius": 36.5},
                {"timestamp": None, "temperature_celsius": 36.6},
                {"timestamp": "not a time", "temperature_celsius": 36.7},
                {"timestamp": "2026-11-23T07:46:00Z", "temperature_celsius": 36.8},
                "not an object",
            ]
        }
    )
    parsed = parse(payload)
    assert rows(payload) == [(at(7, 46, 0), "body_temperature_celsius", 36.8, "degC")]
    where = "data[0].temperature_data.body_temperature_samples"
    assert [warning.split(":")[0] for warning in parsed.warnings] == [
        f"{where}[0].timestamp",
        f"{where}[1].timestamp",
        f"{where}[2].timestamp",
        f"{where}[4]",
    ]


def test_a_block_that_is_not_a_list_is_empty_with_a_warning() -> None:
    payload = one_item(
        measurements_data={"measurements": {"weight_kg": 70}},
        blood_pressure_data={"blood_pressure_samples": "118/76"},
        glucose_data=None,
        temperature_data={"body_temperature_samples": None},
        oxygen_data="x",
    )
    parsed = parse(payload)
    assert parsed.rows == []
    assert [warning.split(":")[0] for warning in parsed.warnings] == [
        "data[0].measurements_data.measurements",
        "data[0].blood_pressure_data.blood_pressure_samples",
    ]


def test_empty_data_and_an_item_with_no_blocks_give_nothing() -> None:
    assert parse({"type": "body", "data": []}).rows == []
    parsed = parse(one_item())
    assert (parsed.rows, parsed.warnings) == ([], [])


def test_a_repeated_sample_time_gives_the_same_natural_key_for_the_writer() -> None:
    # Two weigh-ins at one instant, written in different offsets: the same (measured_at, metric);
    # the writer keeps the last copy of a natural key.
    payload = one_item(
        measurements_data={
            "measurements": [
                {"measurement_time": "2026-11-23T07:41:18+00:00", "weight_kg": 74.3},
                {"measurement_time": "2026-11-23T08:41:18+01:00", "weight_kg": 74.4},
            ]
        }
    )
    (first, _, _, _), (second, _, _, _) = rows(payload)
    assert first == second


@pytest.mark.parametrize("start_time", [None, "soon"])
def test_an_item_without_metadata_start_time_is_bad_data(start_time: Any) -> None:
    payload = load("body")
    payload["data"][0]["metadata"]["start_time"] = start_time
    with pytest.raises(BadData, match=r"metadata\.start_time"):
        parse(payload)


@pytest.mark.parametrize(("data", "field"), [(None, r"^data "), ({}, r"^data "), (["x"], r"data\[0\]")])
def test_wrong_structures_are_bad_data(data: Any, field: str) -> None:
    with pytest.raises(BadData, match=field):
        parse({"type": "body", "data": data})
