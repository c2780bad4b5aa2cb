"""Terra `sleep` events into typed rows (pure: payload in, ParsedRows out).

One `SleepSession` row per `data[]` item, keyed by `metadata.summary_id` (nullable in Terra's
schema: the `metadata.start_time` string as sent stands in for it). `sleep_score` is `scores.sleep`,
else `data_enrichment.sleep_score`; it is a merged field, so the writer keeps a stored value when
this copy's is null. A `summary_id` longer than the column is bad data, as for activities.
"""

from __future__ import annotations

from typing import Any, cast

from ingest.errors import BadData
from ingest.models import SleepSession
from ingest.normalizers.base import ParsedRows
from ingest.normalizers.values import PayloadReader, data_items

SUMMARY_ID_MAX_LENGTH = cast(int, SleepSession._meta.get_field("summary_id").max_length)
DURATIONS = "sleep_durations_data"
HEART = ("heart_rate_data", "summary")


def parse(payload: dict[str, Any]) -> ParsedRows:
    reader = PayloadReader()
    parsed = ParsedRows()
    for index, item in enumerate(data_items(payload)):
        start_time = reader.required_time(item, "metadata", "start_time")
        summary_id = reader.text(item, "metadata", "summary_id")
        if not summary_id or not summary_id.strip():
            summary_id = reader.text(item, "metadata", "start_time")
        if summary_id is not None and len(summary_id) > SUMMARY_ID_MAX_LENGTH:
            # Cut, two sessions sharing a prefix would overwrite each other.
            raise BadData(f"data[{index}].metadata.summary_id is longer than {SUMMARY_ID_MAX_LENGTH} characters")
        sleep_score = reader.number(item, "scores", "sleep")
        if sleep_score is None:
            sleep_score = reader.number(item, "data_enrichment", "sleep_score")
        parsed.add(
            SleepSession,
            {
                "summary_id": summary_id,
                "start_time": start_time,
                "end_time": reader.time(item, "metadata", "end_time"),
                "is_nap": reader.boolean(item, "metadata", "is_nap"),
                "asleep_seconds": reader.number(item, DURATIONS, "asleep", "duration_asleep_state_seconds"),
                "light_seconds": reader.number(item, DURATIONS, "asleep", "duration_light_sleep_state_seconds"),
                "deep_seconds": reader.number(item, DURATIONS, "asleep", "duration_deep_sleep_state_seconds"),
                "rem_seconds": reader.number(item, DURATIONS, "asleep", "duration_REM_sleep_state_seconds"),
                "awake_seconds": reader.number(item, DURATIONS, "awake", "duration_awake_state_seconds"),
                "in_bed_seconds": reader.number(item, DURATIONS, "other", "duration_in_bed_seconds"),
                "sleep_latency_seconds": reader.number(item, DURATIONS, "awake", "sleep_latency_seconds"),
                "wakeup_events": reader.int32(item, DURATIONS, "awake", "num_wakeup_events"),
                "efficiency": reader.number(item, DURATIONS, "sleep_efficiency"),
                "avg_hr_bpm": reader.number(item, *HEART, "avg_hr_bpm"),
                "min_hr_bpm": reader.number(item, *HEART, "min_hr_bpm"),
                "resting_hr_bpm": reader.number(item, *HEART, "resting_hr_bpm"),
                "avg_hrv_rmssd": reader.number(item, *HEART, "avg_hrv_rmssd"),
                "avg_breaths_per_min": reader.number(item, "respiration_data", "breaths_data", "avg_breaths_per_min"),
                "avg_saturation_percentage": reader.number(
                    item, "respiration_data", "oxygen_saturation_data", "avg_saturation_percentage"
                ),
                "temperature_delta": reader.number(item, "temperature_data", "delta"),
                "readiness": reader.number(item, "readiness_data", "readiness"),
                "sleep_score": sleep_score,
            },
        )
    parsed.warnings = reader.warnings
    return parsed
