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
- The reference range is shape A's `interpretation.applied_range` when given (the range Terra
  applied), else one of the listed ranges of type `normal` (or without a type) that have a bound,
  chosen by the report's patient (`Patient`: sex and age from the user's provider profiles, age at
  collection). A range's `context` (`sex`, `age_lower`..`age_upper` inclusive, anything else) must
  not contradict what we know of the patient; among the ranges whose every condition we could
  check, the most specific wins (the first listed on a tie). When we cannot check them all (an
  unknown patient, a pregnancy status) a range is taken only if it is the one range listed, as the
  lab printed it for this patient; else none.
- `flag` is the lab's own interpretation when it gives one (shape A `interpretation.flag`, else
  the lab's printed `source.flag` as H/L/N; layout B `flag`), since the lab knows the patient and
  its method; else it is computed against the stored range (bounds inclusive); else null. A lab's
  flag may therefore disagree with the stored range.
- `collected_at` is `collection_date` + `collection_time` (UTC when no offset), midnight UTC when
  only the date is known.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from typing import Any

from django.db.models.functions import Now
from django.utils import timezone

from accounts.models import User
from ingest.errors import BadData
from ingest.labs.services import NO_LAB_UPLOAD, lab_reports_unpark_for_user, lab_upload_lock, lab_user_lock
from ingest.models import Athlete, Biomarker, LabUpload, LabUploadStatus, RawEventState
from ingest.normalizers.base import EventContext, Outcome, ParsedRows, parked, processed
from ingest.normalizers.values import PayloadReader, parse_timestamp
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


@dataclass(frozen=True)
class Patient:
    """What we know of the person a report is about, to choose among reference ranges."""

    sex: str | None = None  # "male" or "female"
    date_of_birth: date | None = None
    age: int | None = None  # as the provider last reported it, when there is no birth date

    def age_on(self, day: date | None) -> int | None:
        if self.date_of_birth is not None:
            on = day or timezone.now().date()
            born = self.date_of_birth
            return on.year - born.year - ((on.month, on.day) < (born.month, born.day))
        return self.age


UNKNOWN_PATIENT = Patient()


def parse_biomarkers(payload: dict[str, Any], patient: Patient = UNKNOWN_PATIENT) -> ParsedRows:
    """Biomarker rows of a lab report (without user, lab upload or the shared typed-row columns)."""
    reader = PayloadReader()
    parsed = ParsedRows()
    data = payload.get("data")
    panels: dict[Any, str] = {}
    items: Any
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
            row = _nested_result(reader, item, panels, patient)
        else:
            row = _flat_item(reader, item, patient)
        if row is None:
            parsed.warnings.append(f"{where}[{index}]: no biomarker, loinc_code or name; skipped")
            continue
        parsed.add(Biomarker, row)
    parsed.warnings.extend(reader.warnings)
    return parsed


def _flat_item(reader: PayloadReader, item: dict[str, Any], patient: Patient) -> dict[str, Any] | None:
    """Layout B: `{biomarker, display_name, raw_value, value, ucum_code, reference_ranges, ...}`."""
    result_type = reader.text(item, "result_type")
    raw_value = reader.text(item, "raw_value")
    value = None
    # "<0.3" comes with `value: 0.3`: a bound, not a measurement.
    if result_type not in _NOT_NUMERIC_RESULTS and not (raw_value or "").lstrip().startswith(_COMPARATORS):
        value = reader.number(item, "value")
        if value is None and raw_value is not None and _is_number(raw_value):
            value = float(raw_value)
    collected_at = _collected_at(reader, item)
    low, high = _reference_range(reader, item.get("reference_ranges"), patient, collected_at)
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
        reported_flag=_reported_flag(item.get("flag") or reader.get(item, "interpretation", "flag"))
        or _printed_flag(item.get("flag")),
        collected_at=collected_at,
    )


def _nested_result(
    reader: PayloadReader, item: dict[str, Any], panels: dict[Any, str], patient: Patient
) -> dict[str, Any] | None:
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
    collected_at = _collected_at(reader, source)
    if low is None and high is None:
        low, high = _reference_range(reader, item.get("reference_ranges"), patient, collected_at)

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
        reported_flag=_reported_flag(interpretation.get("flag")) or _printed_flag(source.get("flag")),
        collected_at=collected_at,
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
        "flag": reported_flag or _flag(value, low, high),
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


def _reference_range(
    reader: PayloadReader, ranges: Any, patient: Patient, collected_at: datetime | None
) -> tuple[float | None, float | None]:
    """The normal range for this patient: (`lower`|`lower_bound`, `upper`|`upper_bound`)."""
    if ranges is None:
        return None, None
    if not isinstance(ranges, list):
        reader.warnings.append("reference_ranges is not a list; ignored")
        return None, None
    age = patient.age_on(collected_at.date() if collected_at else None)
    checked: list[tuple[int, tuple[float | None, float | None]]] = []  # (conditions matched, range)
    possible: list[tuple[float | None, float | None]] = []
    normal_ranges = 0
    for candidate in ranges:
        if not isinstance(candidate, dict):
            continue
        kind = candidate.get("type", candidate.get("classification"))
        # Any JSON value may stand here; a list or an object is unhashable.
        if kind is not None and (not isinstance(kind, str) or kind not in _NORMAL_RANGE_TYPES):
            continue
        low = reader.number(candidate, "lower") if "lower" in candidate else reader.number(candidate, "lower_bound")
        high = reader.number(candidate, "upper") if "upper" in candidate else reader.number(candidate, "upper_bound")
        if low is None and high is None:
            continue
        normal_ranges += 1
        fit = _context_fit(candidate.get("context"), patient.sex, age)
        if fit is _CONTRADICTED:
            continue
        possible.append((low, high))
        if fit is not _UNCHECKED:
            checked.append((fit, (low, high)))
    if checked:
        best = max(matched for matched, _ in checked)
        return next(bounds for matched, bounds in checked if matched == best)
    if normal_ranges == 1 and possible:
        return possible[0]
    return None, None


_CONTRADICTED = -1
_UNCHECKED = -2
_SEXES = {"male": "male", "m": "male", "man": "male", "female": "female", "f": "female", "woman": "female"}
_ANY = frozenset({"", "any", "all", "both", "unknown"})


def _sex(value: Any) -> str | None:
    return _SEXES.get(value.strip().lower()) if isinstance(value, str) else None


def _context_fit(context: Any, sex: str | None, age: int | None) -> int:
    """How many of the range's conditions the patient meets; _CONTRADICTED when one is not met,
    _UNCHECKED when one cannot be checked (nothing contradicted)."""
    if not isinstance(context, dict):
        return 0
    matched, unchecked = 0, False
    for name, wanted in context.items():
        if wanted is None or (isinstance(wanted, str) and wanted.strip().lower() in _ANY):
            continue
        if name == "sex":
            if _sex(wanted) is None or sex is None:
                unchecked = True
            elif _sex(wanted) != sex:
                return _CONTRADICTED
            else:
                matched += 1
        elif name in ("age_lower", "age_upper"):
            bound = wanted if isinstance(wanted, int | float) and not isinstance(wanted, bool) else None
            if bound is None or age is None:
                unchecked = True
            elif (name == "age_lower" and age < bound) or (name == "age_upper" and age > bound):
                return _CONTRADICTED
            else:
                matched += 1
        else:  # pregnancy status, cycle phase, ...: nothing we know
            unchecked = True
    return _UNCHECKED if unchecked else matched


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


_PRINTED_FLAGS = {"h": "high", "hi": "high", "l": "low", "lo": "low", "n": "normal"}


def _printed_flag(value: Any) -> str | None:
    """The flag as a lab prints it beside a result (H, L, N), else one of ours spelled out."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    return _PRINTED_FLAGS.get(text) or (text if text in FLAGS else None)


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
    """A lab report for its upload: by Terra's upload id (the event's `reference_id`), else as
    ingest/labs/services.py describes for a report without one.

    The payload is checked before the upload is looked up, so a malformed report is dead-lettered
    at once rather than parked and failed later. A `failed` report never undoes a parsed upload:
    Terra may report a failed session of an upload whose other session was parsed, or deliver a
    failure late.
    """
    payload = context.payload
    is_failure = payload.get("type") == FAILED_TYPE
    parsed = None if is_failure else parse_biomarkers(payload)

    upload = _lab_upload(context)
    if upload is None:
        return _park(context)
    _remember_session(upload, payload)
    # The user's reports without an upload id may have waited for this upload to be answered.
    unpark = (partial(lab_reports_unpark_for_user, upload.user_id),) if _waiting(upload) else ()

    if parsed is None:
        error = _failure_message(payload)
        if upload.status == LabUploadStatus.PARSED:
            logger.info(
                "raw_event %d: lab upload %d is parsed; Terra's failure kept out", context.raw_event_id, upload.pk
            )
            return processed(user_id=upload.user_id)
        LabUpload.objects.filter(pk=upload.pk).update(status=LabUploadStatus.FAILED, error=error, updated_at=Now())
        logger.info("raw_event %d: lab upload %d failed at Terra: %s", context.raw_event_id, upload.pk, error)
        return processed(user_id=upload.user_id, after_commit=unpark)

    patient = patient_of(upload.user_id)
    if patient != UNKNOWN_PATIENT:
        parsed = parse_biomarkers(payload, patient)
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
    return processed(user_id=upload.user_id, written=written, after_commit=unpark)


def patient_of(user_id: str) -> Patient:
    """The user's sex and age from their providers' profiles, the most recently updated first."""
    sex = born = age = None
    for profile in Athlete.objects.filter(user_id=user_id).order_by("-updated_at", "-pk"):
        sex = sex or _sex(profile.sex)
        born = born or profile.date_of_birth
        age = age if age is not None else profile.age
    return Patient(sex=sex, date_of_birth=born, age=age)


def _session_id(payload: dict[str, Any]) -> str | None:
    session_id = PayloadReader().text(payload, "data", "session_id")
    return session_id.strip()[:255] if session_id and session_id.strip() else None


def _waiting(upload: LabUpload) -> bool:
    """Submitted and waiting for its report: a candidate for a report without an upload id."""
    return upload.status == LabUploadStatus.PROCESSING and upload.terra_upload_id is not None


def _lab_upload(context: EventContext) -> LabUpload | None:
    if context.reference_id:
        # Pairs with lab_upload_set_terra_id: see ingest/labs/services.py.
        lab_upload_lock(context.reference_id)
        return LabUpload.objects.select_for_update().filter(terra_upload_id=context.reference_id).first()
    session_id = _session_id(context.payload)
    user_id = _reported_user(context.payload)
    if user_id is not None:
        lab_user_lock(user_id)  # before any upload row: the lock order of ingest/labs/services.py
    if session_id:
        upload = LabUpload.objects.select_for_update().filter(terra_session_id=session_id).order_by("pk").first()
        if upload is not None:
            return upload
    if user_id is None:
        return None
    # Uploads still being sent count too: the report may be theirs, their Terra id not yet stored.
    pending = list(
        LabUpload.objects.select_for_update()
        .filter(user_id=user_id, status=LabUploadStatus.PROCESSING)
        .order_by("pk")[:2]
    )
    return pending[0] if len(pending) == 1 and pending[0].terra_upload_id is not None else None


def _reported_user(payload: dict[str, Any]) -> str | None:
    """The `reference_id` we sent with the file (the user's id), when it names a user of ours."""
    user_id = PayloadReader().text(payload, "data", "reference_id")
    if not user_id or not User.objects.filter(pk=user_id).exists():
        return None
    return user_id


def _remember_session(upload: LabUpload, payload: dict[str, Any]) -> None:
    """The first session id seen for an upload, so its later reports match without an upload id."""
    session_id = _session_id(payload)
    if session_id and upload.terra_session_id is None:
        LabUpload.objects.filter(pk=upload.pk, terra_session_id=None).update(terra_session_id=session_id)


def _park(context: EventContext) -> Outcome:
    if context.reference_id:
        return parked(NO_LAB_UPLOAD)
    # Without an upload id, the un-parking finds the event by its user (ingest/labs/services.py).
    return Outcome(RawEventState.PARKED, reason=NO_LAB_UPLOAD, user_id=_reported_user(context.payload))


def _failure_message(payload: dict[str, Any]) -> str:
    """Terra's error as one readable line: `<code>: <message>`."""
    reader = PayloadReader()
    code = reader.text(payload, "data", "error", "code")
    message = reader.text(payload, "data", "error", "message")
    if code and message:
        return f"{code}: {message}"
    return code or message or "Terra could not parse the lab report"
