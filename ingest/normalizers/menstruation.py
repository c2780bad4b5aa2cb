"""Terra `menstruation` events into typed rows (pure: payload in, ParsedRows out).

One `MenstruationDay` row per `data[]` item, keyed by the calendar date of `metadata.start_time` as
written. `phase` is Terra's `current_phase` enum, an integer where 0 (unknown) is a value.
"""

from __future__ import annotations

from typing import Any

from ingest.models import MenstruationDay
from ingest.normalizers.base import ParsedRows
from ingest.normalizers.values import PayloadReader, data_items

CYCLE = "menstruation_data"


def parse(payload: dict[str, Any]) -> ParsedRows:
    reader = PayloadReader()
    parsed = ParsedRows()
    for item in data_items(payload):
        parsed.add(
            MenstruationDay,
            {
                "date": reader.required_day(item, "metadata", "start_time"),
                "period_start_date": reader.day(item, CYCLE, "period_start_date"),
                "period_length_days": reader.int32(item, CYCLE, "period_length_days"),
                "day_in_cycle": reader.int32(item, CYCLE, "day_in_cycle"),
                "cycle_length_days": reader.int32(item, CYCLE, "cycle_length_days"),
                "phase": reader.int32(item, CYCLE, "current_phase"),
            },
        )
    parsed.warnings = reader.warnings
    return parsed
