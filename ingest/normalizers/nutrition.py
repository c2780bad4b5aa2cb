"""Terra `nutrition` events into typed rows (pure: payload in, ParsedRows out).

One `NutritionDaily` row per `data[]` item, keyed by the calendar date of `metadata.start_time` as
written: the day's totals from `summary.macros.*` and `summary.water_ml`. Meals and drink
samples are not stored.
"""

from __future__ import annotations

from typing import Any

from ingest.models import NutritionDaily
from ingest.normalizers.base import ParsedRows
from ingest.normalizers.values import PayloadReader, data_items

MACROS = ("summary", "macros")


def parse(payload: dict[str, Any]) -> ParsedRows:
    reader = PayloadReader()
    parsed = ParsedRows()
    for item in data_items(payload):
        parsed.add(
            NutritionDaily,
            {
                "date": reader.required_day(item, "metadata", "start_time"),
                "calories": reader.number(item, *MACROS, "calories"),
                "protein_g": reader.number(item, *MACROS, "protein_g"),
                "carbohydrates_g": reader.number(item, *MACROS, "carbohydrates_g"),
                "fat_g": reader.number(item, *MACROS, "fat_g"),
                "fiber_g": reader.number(item, *MACROS, "fiber_g"),
                "sugar_g": reader.number(item, *MACROS, "sugar_g"),
                "water_ml": reader.number(item, "summary", "water_ml"),
            },
        )
    parsed.warnings = reader.warnings
    return parsed
