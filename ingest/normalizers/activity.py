"""Terra `activity` events into typed rows (pure: payload in, ParsedRows out).

One `Activity` row per `data[]` item, keyed by `metadata.summary_id`. An item whose
`metadata.upload_type` is 4 (delete) gives that summary_id's tombstone: an ordinary row, `deleted`
and every value cleared, that the writer orders against the other copies like any row. A delete
older than the stored copy then loses to it, and a copy older than a delete cannot bring the
activity back (tests/ingest/test_activity_deletes.py).
"""

from __future__ import annotations

from typing import Any

from ingest.errors import BadData
from ingest.models import Activity
from ingest.normalizers.base import ParsedRows
from ingest.normalizers.values import PayloadReader, data_items

UPLOAD_TYPE_DELETE = 4
_INT32 = 2**31 - 1
_SUMMARY_ID_MAX = Activity._meta.get_field("summary_id").max_length or 255
_PARSED_FIELDS = Activity.parsed_fields()


def summary_id(reader: PayloadReader, item: dict[str, Any], index: int) -> str:
    """`metadata.summary_id` as text exactly as sent: an id above 2^53 sent as a JSON number is an
    int in Python, so str() keeps every digit."""
    value = reader.get(item, "metadata", "summary_id")
    if isinstance(value, float) and value.is_integer():
        text: str | None = str(int(value))  # 2.1458873012e10, not "21458873012.0"
    else:
        text = reader.text(item, "metadata", "summary_id")  # refuses bools and structures
    if text is None or not text.strip():
        raise BadData(f"data[{index}].metadata.summary_id is missing or not text")
    if len(text) > _SUMMARY_ID_MAX:
        raise BadData(f"data[{index}].metadata.summary_id is longer than {_SUMMARY_ID_MAX} characters")
    return text


def int32(reader: PayloadReader, obj: Any, *path: str) -> int | None:
    """An integer for a 32-bit column (PostgreSQL `integer`): beyond it is null with a warning."""
    value = reader.integer(obj, *path)
    if value is not None and abs(value) > _INT32:
        reader.warnings.append(f"{'.'.join(path)}: {value!r} is not a 32-bit integer; stored as null")
        return None
    return value


def tombstone(key: str) -> dict[str, Any]:
    """The row a delete leaves: its key, `deleted`, and no values."""
    return dict.fromkeys(_PARSED_FIELDS) | {"summary_id": key, "deleted": True}


def parse(payload: dict[str, Any]) -> ParsedRows:
    reader = PayloadReader()
    parsed = ParsedRows()
    for index, item in enumerate(data_items(payload)):
        key = summary_id(reader, item, index)
        if reader.integer(item, "metadata", "upload_type") == UPLOAD_TYPE_DELETE:
            parsed.add(Activity, tombstone(key))
            continue
        start_time = reader.required_time(item, "metadata", "start_time")
        end_time = reader.time(item, "metadata", "end_time")
        parsed.add(
            Activity,
            {
                "summary_id": key,
                "name": reader.text(item, "metadata", "name"),
                "activity_type": int32(reader, item, "metadata", "type"),
                "start_time": start_time,
                "end_time": end_time,
                "duration_seconds": (end_time - start_time).total_seconds() if end_time is not None else None,
                "active_seconds": reader.number(item, "active_durations_data", "activity_seconds"),
                "distance_meters": reader.number(item, "distance_data", "summary", "distance_meters"),
                "steps": reader.integer(item, "distance_data", "summary", "steps"),
                "elevation_gain_meters": reader.number(
                    item, "distance_data", "summary", "elevation", "gain_actual_meters"
                ),
                "total_burned_calories": reader.number(item, "calories_data", "total_burned_calories"),
                "active_calories": reader.number(item, "calories_data", "net_activity_calories"),
                "avg_hr_bpm": reader.number(item, "heart_rate_data", "summary", "avg_hr_bpm"),
                "max_hr_bpm": reader.number(item, "heart_rate_data", "summary", "max_hr_bpm"),
                "avg_speed_meters_per_second": reader.number(item, "movement_data", "avg_speed_meters_per_second"),
                "avg_pace_minutes_per_kilometer": reader.number(
                    item, "movement_data", "avg_pace_minutes_per_kilometer"
                ),
                "avg_cadence_rpm": reader.number(item, "movement_data", "avg_cadence_rpm"),
                "avg_watts": reader.number(item, "power_data", "avg_watts"),
                "max_watts": reader.number(item, "power_data", "max_watts"),
                "vo2max_ml_per_min_per_kg": reader.number(item, "oxygen_data", "vo2max_ml_per_min_per_kg"),
                "device_name": reader.text(item, "device_data", "name"),
                "deleted": False,
            },
        )
    parsed.warnings = reader.warnings
    return parsed
