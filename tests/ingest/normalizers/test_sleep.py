"""`sleep` events into `sleep_sessions` rows (the pure parser, no database)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ingest.errors import BadData
from ingest.models import SleepSession
from ingest.normalizers.sleep import parse
from tests.terra import sample

COLUMNS = SleepSession.parsed_fields()


def load() -> dict[str, Any]:
    return json.loads(sample("sleep"))


def only_row(payload: dict[str, Any]) -> dict[str, Any]:
    parsed = parse(payload)
    assert [model for model, _ in parsed.rows] == [SleepSession]
    return parsed.rows[0][1]


def test_the_sleep_sample_gives_one_row_with_every_column() -> None:
    parsed = parse(load())
    assert parsed.rows == [
        (
            SleepSession,
            {
                "summary_id": "0b9f4d8e-6a2c-4c1e-9d53-7f2e8a1b4c60",
                "start_time": datetime(2026, 11, 22, 23, 18, tzinfo=UTC),
                "end_time": datetime(2026, 11, 23, 6, 51, 30, tzinfo=UTC),
                "is_nap": False,
                "asleep_seconds": 24480.0,
                "light_seconds": 12690.0,
                "deep_seconds": 5430.0,
                "rem_seconds": 6360.0,
                "awake_seconds": 2730.0,
                "in_bed_seconds": 27210.0,
                "sleep_latency_seconds": 540.0,
                "wakeup_events": 3,
                "efficiency": 90.0,
                "avg_hr_bpm": 54.0,
                "min_hr_bpm": 47.0,
                "resting_hr_bpm": 47.0,
                "avg_hrv_rmssd": 48.0,
                "avg_breaths_per_min": 14.6,
                "avg_saturation_percentage": 96.8,
                "temperature_delta": -0.21,
                "readiness": 82.0,
                "sleep_score": 84.0,
            },
        )
    ]
    assert parsed.deletions == []
    assert parsed.warnings == []
    assert sorted(parsed.rows[0][1]) == sorted(COLUMNS)


def test_without_a_summary_id_the_start_time_as_sent_is_the_key() -> None:
    payload = load()
    payload["data"][0]["metadata"]["summary_id"] = None
    payload["data"][0]["metadata"]["start_time"] = "2026-11-22T23:18:00.000000+01:00"
    row = only_row(payload)
    assert row["summary_id"] == "2026-11-22T23:18:00.000000+01:00"
    assert row["start_time"] == datetime(2026, 11, 22, 23, 18, tzinfo=timezone(timedelta(hours=1)))


@pytest.mark.parametrize("missing", [lambda m: m.pop("summary_id"), lambda m: m.update(summary_id="")])
def test_a_missing_or_empty_summary_id_falls_back_to_the_start_time(missing: Any) -> None:
    payload = load()
    missing(payload["data"][0]["metadata"])
    assert only_row(payload)["summary_id"] == "2026-11-22T23:18:00.000000+00:00"


def test_without_scores_sleep_the_enrichment_sleep_score_is_used() -> None:
    payload = load()
    payload["data"][0]["scores"]["sleep"] = None
    assert only_row(payload)["sleep_score"] == 81.5


def test_without_a_scores_block_the_enrichment_sleep_score_is_used() -> None:
    payload = load()
    payload["data"][0]["scores"] = None
    assert only_row(payload)["sleep_score"] == 81.5


def test_with_neither_score_the_sleep_score_is_none() -> None:
    payload = load()
    payload["data"][0]["scores"] = {"sleep": None}
    payload["data"][0]["data_enrichment"] = None
    assert only_row(payload)["sleep_score"] is None


def test_a_sleep_with_only_metadata_gives_a_row_of_nones() -> None:
    payload = load()
    payload["data"][0] = {"metadata": {"start_time": "2026-11-22T23:18:00.000000"}}
    parsed = parse(payload)
    assert parsed.rows == [
        (
            SleepSession,
            dict.fromkeys(COLUMNS)
            | {
                "summary_id": "2026-11-22T23:18:00.000000",
                "start_time": datetime(2026, 11, 22, 23, 18, tzinfo=UTC),
            },
        )
    ]
    assert parsed.warnings == []


def test_numbers_given_as_strings_are_numbers() -> None:
    payload = load()
    payload["data"][0]["sleep_durations_data"]["sleep_efficiency"] = "12.5"
    payload["data"][0]["sleep_durations_data"]["awake"]["num_wakeup_events"] = "4"
    parsed = parse(payload)
    row = parsed.rows[0][1]
    assert row["efficiency"] == 12.5
    assert row["wakeup_events"] == 4
    assert type(row["wakeup_events"]) is int
    assert parsed.warnings == []


def test_a_value_that_is_not_a_number_becomes_none_with_a_warning_and_the_row_is_kept() -> None:
    payload = load()
    payload["data"][0]["sleep_durations_data"]["asleep"]["duration_REM_sleep_state_seconds"] = "lots"
    parsed = parse(payload)
    row = parsed.rows[0][1]
    assert row["rem_seconds"] is None
    assert row["deep_seconds"] == 5430.0
    assert len(parsed.warnings) == 1
    assert parsed.warnings[0].startswith("sleep_durations_data.asleep.duration_REM_sleep_state_seconds: ")


def test_is_nap_true_is_kept() -> None:
    payload = load()
    payload["data"][0]["metadata"]["is_nap"] = True
    assert only_row(payload)["is_nap"] is True


def test_empty_data_gives_no_rows() -> None:
    payload = load()
    payload["data"] = []
    assert parse(payload).rows == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p.update(data="nope"), "data"),
        (lambda p: p.update(data=[None]), "data[0]"),
        (lambda p: p["data"][0]["metadata"].pop("start_time"), "metadata.start_time"),
        (lambda p: p["data"][0].update(metadata=None), "metadata.start_time"),
    ],
)
def test_a_wrong_structure_is_bad_data_naming_the_field(change: Any, field: str) -> None:
    payload = load()
    change(payload)
    with pytest.raises(BadData, match=rf"^{re.escape(field)} "):
        parse(payload)
