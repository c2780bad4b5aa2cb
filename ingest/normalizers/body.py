"""Terra `body` events into typed rows (pure: payload in, ParsedRows out).

One `BodyMeasurement` row per measured value, keyed by (`measured_at`, `metric`). A value
that is null (the metric was not measured) or not a number gives no row: a null row would only
hide what an earlier copy stored. A sample without a usable time gives no rows either.
"""

from __future__ import annotations

from typing import Any

from ingest.models import BodyMeasurement
from ingest.normalizers.base import ParsedRows
from ingest.normalizers.values import PayloadReader, data_items

# (block path, time field, [(Terra field, metric, unit)]). Oxygen saturation samples of type 1
# measure muscle (SmO2), not blood: only blood (type 0, or no type) is SpO2.
SAMPLE_BLOCKS: tuple[tuple[tuple[str, ...], str, tuple[tuple[str, str, str], ...]], ...] = (
    (
        ("measurements_data", "measurements"),
        "measurement_time",
        (
            ("weight_kg", "weight_kg", "kg"),
            ("BMI", "bmi", "kg/m2"),
            ("bodyfat_percentage", "body_fat_percentage", "%"),
            ("height_cm", "height_cm", "cm"),
            ("muscle_mass_g", "muscle_mass_g", "g"),
            ("bone_mass_g", "bone_mass_g", "g"),
            ("water_percentage", "water_percentage", "%"),
        ),
    ),
    (
        ("blood_pressure_data", "blood_pressure_samples"),
        "timestamp",
        (
            ("systolic_bp", "systolic_bp_mmhg", "mmHg"),
            ("diastolic_bp", "diastolic_bp_mmhg", "mmHg"),
        ),
    ),
    (
        ("glucose_data", "blood_glucose_samples"),
        "timestamp",
        (("blood_glucose_mg_per_dL", "blood_glucose_mg_per_dl", "mg/dL"),),
    ),
    (
        ("temperature_data", "body_temperature_samples"),
        "timestamp",
        (("temperature_celsius", "body_temperature_celsius", "degC"),),
    ),
    (
        ("oxygen_data", "saturation_samples"),
        "timestamp",
        (("percentage", "spo2_percentage", "%"),),
    ),
)

OXYGEN_SATURATION_MUSCLE = 1


def _samples(reader: PayloadReader, item: dict[str, Any], index: int, path: tuple[str, ...]) -> list[Any]:
    block = reader.get(item, *path)
    if block is None:
        return []
    if not isinstance(block, list):
        reader.warnings.append(f"data[{index}].{'.'.join(path)}: not a list; ignored")
        return []
    return block


def _add_sample(
    reader: PayloadReader,
    parsed: ParsedRows,
    sample: dict[str, Any],
    time_field: str,
    fields: tuple[tuple[str, str, str], ...],
) -> None:
    measured_at = reader.time(sample, time_field)  # warns when present but not a time
    if measured_at is None:
        if sample.get(time_field) is None:
            reader.warnings.append(f"{time_field}: missing; sample ignored")
        return
    for field_name, metric, unit in fields:
        value = reader.number(sample, field_name)
        if value is not None:
            parsed.add(BodyMeasurement, {"measured_at": measured_at, "metric": metric, "value": value, "unit": unit})


def parse(payload: dict[str, Any]) -> ParsedRows:
    reader = PayloadReader()
    parsed = ParsedRows()
    for index, item in enumerate(data_items(payload)):
        # Body rows carry their own times, but an item without its day is still a wrong structure.
        reader.required_time(item, "metadata", "start_time")
        for path, time_field, fields in SAMPLE_BLOCKS:
            for position, sample in enumerate(_samples(reader, item, index, path)):
                where = f"data[{index}].{'.'.join(path)}[{position}]"
                if not isinstance(sample, dict):
                    reader.warnings.append(f"{where}: not an object; ignored")
                    continue
                if path[0] == "oxygen_data" and sample.get("type") == OXYGEN_SATURATION_MUSCLE:
                    continue
                first_warning = len(reader.warnings)
                _add_sample(reader, parsed, sample, time_field, fields)
                # The reader names the field within the sample; say which sample it was.
                reader.warnings[first_warning:] = [f"{where}.{w}" for w in reader.warnings[first_warning:]]
    parsed.warnings = reader.warnings
    return parsed
