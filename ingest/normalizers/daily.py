"""Terra `daily` events into typed rows (pure: payload in, ParsedRows out).

One `DailySummary` row per `data[]` item, keyed by the calendar date of `metadata.start_time` as
written. A daily payload carries the running totals so far for that day. Every path is
read from the item itself so that a warning names the field's full path.
"""

from __future__ import annotations

from typing import Any

from ingest.models import DailySummary
from ingest.normalizers.base import ParsedRows
from ingest.normalizers.values import PayloadReader, data_items

HEART = ("heart_rate_data", "summary")


def parse(payload: dict[str, Any]) -> ParsedRows:
    reader = PayloadReader()
    parsed = ParsedRows()
    for item in data_items(payload):
        start_time = reader.required_time(item, "metadata", "start_time")
        parsed.add(
            DailySummary,
            {
                "date": reader.required_day(item, "metadata", "start_time"),
                "start_time": start_time,
                "end_time": reader.time(item, "metadata", "end_time"),
                "steps": reader.integer(item, "distance_data", "steps"),
                "distance_meters": reader.number(item, "distance_data", "distance_meters"),
                "floors_climbed": reader.number(item, "distance_data", "floors_climbed"),
                "elevation_gain_meters": reader.number(item, "distance_data", "elevation", "gain_actual_meters"),
                "total_burned_calories": reader.number(item, "calories_data", "total_burned_calories"),
                "active_calories": reader.number(item, "calories_data", "net_activity_calories"),
                "bmr_calories": reader.number(item, "calories_data", "BMR_calories"),
                "activity_seconds": reader.number(item, "active_durations_data", "activity_seconds"),
                "low_intensity_seconds": reader.number(item, "active_durations_data", "low_intensity_seconds"),
                "moderate_intensity_seconds": reader.number(
                    item, "active_durations_data", "moderate_intensity_seconds"
                ),
                "vigorous_intensity_seconds": reader.number(
                    item, "active_durations_data", "vigorous_intensity_seconds"
                ),
                "inactivity_seconds": reader.number(item, "active_durations_data", "inactivity_seconds"),
                "avg_hr_bpm": reader.number(item, *HEART, "avg_hr_bpm"),
                "max_hr_bpm": reader.number(item, *HEART, "max_hr_bpm"),
                "min_hr_bpm": reader.number(item, *HEART, "min_hr_bpm"),
                "resting_hr_bpm": reader.number(item, *HEART, "resting_hr_bpm"),
                "avg_hrv_rmssd": reader.number(item, *HEART, "avg_hrv_rmssd"),
                "avg_hrv_sdnn": reader.number(item, *HEART, "avg_hrv_sdnn"),
                "avg_saturation_percentage": reader.number(item, "oxygen_data", "avg_saturation_percentage"),
                "vo2max_ml_per_min_per_kg": reader.number(item, "oxygen_data", "vo2max_ml_per_min_per_kg"),
                "avg_stress_level": reader.number(item, "stress_data", "avg_stress_level"),
                "max_stress_level": reader.number(item, "stress_data", "max_stress_level"),
                "recovery_score": reader.number(item, "scores", "recovery"),
                "activity_score": reader.number(item, "scores", "activity"),
                "sleep_score": reader.number(item, "scores", "sleep"),
            },
        )
    parsed.warnings = reader.warnings
    return parsed
