"""Terra lab reports (`event_type = "lab_report"`) into biomarkers, and the upload's status.

Three shapes arrive: the legacy `{upload_id, data: [...]}` with flat items (shape C
with layout B), and Terra's `lab_report.completed` / `lab_report.failed` events (shape A), whose
`data.results[]` nest each result under `source`, `biomarker`, `measurement`, `interpretation`
and `reference_ranges`. A flat item inside `data.results[]` (layout B) is read as well.

Column rules, where a payload could be read more than one way:
- `code`: `biomarker` (shape A `biomarker.key`), else `loinc_code`, else a slug of `display_name`;
  an unmatched result without a display name falls back to a slug of the lab's own name
  (`original_name`, shape A `source.name`), so results Terra could not match are kept; an item
  with none of these is skipped with a warning.
- `value` is a number only for a numeric result: a bounded (`<0.3`), qualitative, text or absent
  one has `value` null and its text in `value_text`.
- The reference range is shape A's `interpretation.applied_range` when given, else the first
  range of type `normal` (or without a type) that has a bound.
- `flag` is computed against that range (bounds inclusive) when the value and the range allow,
  so it always agrees with the stored `reference_low`/`reference_high`; otherwise it is the
  payload's own interpretation when that is `low`, `high` or `normal`; else null.
- `collected_at` is `collection_date` + `collection_time` (UTC when no offset), midnight UTC when
  only the date is known.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from datetime import UTC, date, datetime
from typing import Any

from django.db.models.functions import Now

from ingest.errors import BadData
from ingest.models import Biomarker, LabUpload, LabUploadStatus
from ingest.normalizers.base import EventContext, Outcome, ParsedRows, parked, processed
from ingest.normalizers.values import PayloadReader, parse_timestamp
from ingest.services.labs import NO_LAB_UPLOAD, lab_upload_lock
from ingest.services.typed_rows import typed_rows_write

logger = logging.getLogger(__name__)

FAILED_TYPE = "lab_report.failed"
FLAGS = frozenset({"low", "high", "normal"})
_NOT_NUMERIC_RESULTS = frozenset({"bounded", "qualitative", "text", "absent"})
_NORMAL_RANGE_TYPES = frozenset({"normal", "reference"})
_BOUNDED_OPERATORS = {"lt": "<", "gt": ">", "le": "<=", "lte": "<=", "ge": ">=", "gte": ">="}
_COMPARATORS = ("<", ">", "\u2264", "\u2265")
_NESTED_PARTS = ("source", "biomarker", "measurement", "interpretation")
_SLUG_JUNK = re.compile(r"[^a-z0-9]+")
_CODE_MAX = 128


# The pure part: a payload into biomarker rows ---------------------------------------------------


def parse_biomarkers(payload: dict[str, Any]) -> ParsedRows:
    """Biomarker rows of a lab report (without user, lab upload or the shared typed-row columns)."""
    reader = PayloadReader()
    parsed = ParsedRows()
    data = payload.get("data")
    panels: dict[Any, str] = {}
    if isinstance(data, list):
        items, where = data, "data"
    elif isinstance(data, dict):
        items, where = data.get("results"), "data.results"
        if not isinstance(items, list):
            raise BadData("data.results is missing or not a list")
        panels = _panel_names(reader, data.get("panels"))
    else:
        raise BadData("data is missing or neither a list nor an object")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadData(f"{where}[{index}] is not an object")
        if any(isinstance(item.get(part), dict) for part in _NESTED_PARTS):
            row = _nested_result(reader, item, panels)
        else:
            row = _flat_item(reader, item)
        if row is None:
            parsed.warnings.append(f"{where}[{index}]: no biomarker, loinc_code or name; skipped")
            continue
        parsed.add(Biomarker, row)
    parsed.warnings.extend(reader.warnings)
    return parsed


def _flat_item(reader: PayloadReader, item: dict[str, Any]) -> dict[str, Any] | None:
    """Layout B: `{biomarker, display_name, raw_value, value, ucum_code, reference_ranges, ...}`."""
    result_type = reader.text(item, "result_type")
    raw_value = reader.text(item, "raw_value")
    value = None
    # "<0.3" comes with `value: 0.3`: a bound, not a measurement.
    if result_type not in _NOT_NUMERIC_RESULTS and not (raw_value or "").lstrip().startswith(_COMPARATORS):
        value = reader.number(item, "value")
        if value is None and raw_value is not None and _is_number(raw_value):
            value = float(raw_value)
    low, high = _reference_range(reader, item.get("reference_ranges"))
    return _row(
        key=reader.text(item, "biomarker"),
        loinc_code=reader.text(item, "loinc_code"),
        display_name=reader.text(item, "display_name"),
        original_name=reader.text(item, "original_name"),
        panel=reader.text(item, "panel_name") or reader.text(item, "panel"),
        value=value,
        value_text=raw_value or reader.text(item, "qualitative_value"),
        unit=reader.text(item, "ucum_code") or reader.text(item, "display_units"),
        low=low,
        high=high,
        reported_flag=_reported_flag(item.get("flag") or reader.get(item, "interpretation", "flag")),
        collected_at=_collected_at(reader, item),
    )


def _nested_result(reader: PayloadReader, item: dict[str, Any], panels: dict[Any, str]) -> dict[str, Any] | None:
    """Shape A: `{source, biomarker, measurement, interpretation, reference_ranges}`."""
    source = _part(item, "source")
    biomarker = _part(item, "biomarker")
    measurement = _part(item, "measurement")
    interpretation = _part(item, "interpretation")

    result_type = reader.text(measurement, "type")
    raw_value = reader.text(source, "value")
    value = None
    if result_type in (None, "numeric"):
        value = reader.number(measurement, "numeric")
        if value is None and raw_value is not None and _is_number(raw_value):
            value = float(raw_value)
    value_text = (
        raw_value
        or reader.text(measurement, "qualitative", "text")
        or reader.text(measurement, "text")
        or _bounded_text(reader, measurement)
    )

    applied = interpretation.get("applied_range")
    low, high = (None, None)
    if isinstance(applied, dict):
        low, high = reader.number(applied, "lower"), reader.number(applied, "upper")
    if low is None and high is None:
        low, high = _reference_range(reader, item.get("reference_ranges"))

    panel_id, panel_key = biomarker.get("panel_id"), biomarker.get("panel_key")
    panel = (
        (panels.get(panel_id) if isinstance(panel_id, int | str) else None)
        or (panels.get(panel_key) if isinstance(panel_key, str) else None)
        or reader.text(source, "panel")
    )
    return _row(
        key=reader.text(biomarker, "key"),
        loinc_code=reader.text(biomarker, "loinc_code"),
        display_name=reader.text(biomarker, "display_name"),
        original_name=reader.text(source, "name"),
        panel=panel,
        value=value,
        value_text=value_text,
        unit=reader.text(measurement, "ucum_code") or reader.text(measurement, "units") or reader.text(source, "units"),
        low=low,
        high=high,
        reported_flag=_reported_flag(interpretation.get("flag")),
        collected_at=_collected_at(reader, source),
    )


def _row(
    *,
    key: str | None,
    loinc_code: str | None,
    display_name: str | None,
    original_name: str | None,
    panel: str | None,
    value: float | None,
    value_text: str | None,
    unit: str | None,
    low: float | None,
    high: float | None,
    reported_flag: str | None,
    collected_at: datetime | None,
) -> dict[str, Any] | None:
    key = key.strip() if key else None
    loinc_code = loinc_code.strip() if loinc_code else None
    code = key or loinc_code or _slug(display_name) or _slug(original_name)
    if not code:
        return None
    return {
        "code": code[:_CODE_MAX],
        "name": display_name or original_name,
        "loinc_code": loinc_code[:32] if loinc_code else None,
        "panel": panel,
        "value": value,
        "value_text": value_text,
        "unit": unit[:64] if unit else None,
        "reference_low": low,
        "reference_high": high,
        "flag": _flag(value, low, high) or reported_flag,
        "collected_at": collected_at,
    }


def _part(item: dict[str, Any], name: str) -> dict[str, Any]:
    part = item.get(name)
    return part if isinstance(part, dict) else {}


def _panel_names(reader: PayloadReader, panels: Any) -> dict[Any, str]:
    """Shape A's `data.panels[]` by id and by key, for the results' `biomarker.panel_id`."""
    names: dict[Any, str] = {}
    if not isinstance(panels, list):
        return names
    for panel in panels:
        name = reader.text(panel, "name") if isinstance(panel, dict) else None
        if name is None:
            continue
        for ref in (panel.get("id"), panel.get("key")):
            if isinstance(ref, int | str) and not isinstance(ref, bool):
                names[ref] = name
    return names


def _reference_range(reader: PayloadReader, ranges: Any) -> tuple[float | None, float | None]:
    """The first normal range with a bound: (`lower`|`lower_bound`, `upper`|`upper_bound`)."""
    if ranges is None:
        return None, None
    if not isinstance(ranges, list):
        reader.warnings.append("reference_ranges is not a list; ignored")
        return None, None
    for candidate in ranges:
        if not isinstance(candidate, dict):
            continue
        kind = candidate.get("type", candidate.get("classification"))
        # Any JSON value may stand here; a list or an object is unhashable.
        if kind is not None and (not isinstance(kind, str) or kind not in _NORMAL_RANGE_TYPES):
            continue
        low = reader.number(candidate, "lower") if "lower" in candidate else reader.number(candidate, "lower_bound")
        high = reader.number(candidate, "upper") if "upper" in candidate else reader.number(candidate, "upper_bound")
        if low is not None or high is not None:
            return low, high
    return None, None


def _flag(value: float | None, low: float | None, high: float | None) -> str | None:
    if value is None or (low is None and high is None):
        return None
    if low is not None and value < low:
        return "low"
    if high is not None and value > high:
        return "high"
    return "normal"


def _reported_flag(value: Any) -> str | None:
    if isinstance(value, str) and value.strip().lower() in FLAGS:
        return value.strip().lower()
    return None


def _bounded_text(reader: PayloadReader, measurement: dict[str, Any]) -> str | None:
    operator = _BOUNDED_OPERATORS.get(reader.text(measurement, "bounded", "operator") or "")
    bound = reader.number(measurement, "bounded", "value")
    if operator is None or bound is None:
        return None
    return f"{operator}{bound:g}"


def _collected_at(reader: PayloadReader, obj: dict[str, Any]) -> datetime | None:
    day_text = reader.text(obj, "collection_date")
    if not day_text:
        return None
    day_text = day_text.strip()
    if len(day_text) > 10 and (full := parse_timestamp(day_text)) is not None:
        return full
    try:
        day = date.fromisoformat(day_text[:10])
    except ValueError:
        reader.warnings.append(f"collection_date: {day_text[:60]!r} is not a date; stored as null")
        return None
    time_text = reader.text(obj, "collection_time")
    if time_text and time_text.strip():
        at = parse_timestamp(f"{day.isoformat()}T{time_text.strip()}")
        if at is not None:
            return at
        reader.warnings.append(f"collection_time: {time_text[:60]!r} is not a time; the date alone is kept")
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text.strip()))
    except ValueError:
        return False


def _slug(name: str | None) -> str | None:
    if not name:
        return None
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return _SLUG_JUNK.sub("_", ascii_name.lower()).strip("_") or None


# The worker's part: find the upload, write the rows, set its status -----------------------------


def normalize(context: EventContext) -> Outcome:
    """A lab report for the upload whose Terra upload id is the event's `reference_id`.

    The payload is checked before the upload is looked up, so a malformed report is dead-lettered
    at once rather than parked and failed later.
    """
    payload = context.payload
    is_failure = payload.get("type") == FAILED_TYPE
    parsed = None if is_failure else parse_biomarkers(payload)

    upload = _lab_upload(context)
    if upload is None:
        return parked(NO_LAB_UPLOAD)

    if parsed is None:
        error = _failure_message(payload)
        LabUpload.objects.filter(pk=upload.pk).update(status=LabUploadStatus.FAILED, error=error, updated_at=Now())
        logger.info("raw_event %d: lab upload %d failed at Terra: %s", context.raw_event_id, upload.pk, error)
        return processed(user_id=upload.user_id)

    for warning in parsed.warnings:
        logger.warning("raw_event %d: %s", context.raw_event_id, warning)
    # lab_upload is part of the natural key (user, lab_upload, code), so it travels in each row.
    rows = ParsedRows(
        rows=[(model, {**values, "lab_upload_id": upload.pk}) for model, values in parsed.rows],
        warnings=parsed.warnings,
    )
    written = typed_rows_write(
        rows,
        user_id=upload.user_id,
        provider="",
        terra_user_id=context.terra_user_id,
        raw_event_id=context.raw_event_id,
        ordering_ts=context.ordering_ts,
    )
    LabUpload.objects.filter(pk=upload.pk).update(
        status=LabUploadStatus.PARSED, parsed_at=Now(), error=None, updated_at=Now()
    )
    return processed(user_id=upload.user_id, written=written)


def _lab_upload(context: EventContext) -> LabUpload | None:
    """The upload by Terra's upload id (the event's reference_id), else by shape A's session id."""
    if context.reference_id:
        # Pairs with lab_upload_set_terra_id: see ingest/services/labs.py.
        lab_upload_lock(context.reference_id)
        return LabUpload.objects.select_for_update().filter(terra_upload_id=context.reference_id).first()
    session_id = PayloadReader().text(context.payload, "data", "session_id")
    if session_id:
        return LabUpload.objects.select_for_update().filter(terra_session_id=session_id).order_by("pk").first()
    return None


def _failure_message(payload: dict[str, Any]) -> str:
    """Terra's error as one readable line: `<code>: <message>`."""
    reader = PayloadReader()
    code = reader.text(payload, "data", "error", "code")
    message = reader.text(payload, "data", "error", "message")
    if code and message:
        return f"{code}: {message}"
    return code or message or "Terra could not parse the lab report"
