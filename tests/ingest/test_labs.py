"""Lab reports: the biomarker parser, then the worker's path end to end."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from django.db import IntegrityError

from accounts.models import User
from ingest.errors import BadData
from ingest.labs.services import SubmitOutcome, lab_upload_delete, lab_upload_set_terra_id, lab_upload_submit
from ingest.models import Athlete, Biomarker, BiomarkersWide, LabUpload, LabUploadStatus, RawEvent, RawEventState
from ingest.normalizers.labs import Patient, parse_biomarkers
from ingest.services import connections
from ingest.services.processing import ProcessStatus, raw_event_process
from tests.ledger import process, store
from tests.terra import body_of, sample

pytestmark = pytest.mark.django_db

OUR_USER = "user_2pQm9XkL4vN8rT1sYb6WcZ3eHdA"
UPLOAD_ID = "upl_7f3a9c2e5b1d"  # lab_report.json and lab_report_completed.json
FAILED_UPLOAD_ID = "upl_1e8d4b7a2f90"  # lab_report_failed.json
COLLECTED_0815 = datetime(2026, 11, 18, 8, 15, tzinfo=UTC)
COLLECTED_DAY = datetime(2026, 11, 18, tzinfo=UTC)

# Every column of every row, read from tests/fixtures/terra/lab_report.json by hand.
LEGACY_ROWS = [
    {
        "code": "hemoglobin",
        "name": "Hemoglobin",
        "loinc_code": "718-7",
        "panel": "Full Blood Count",
        "value": 14.2,
        "value_text": "14.2",
        "unit": "g/dL",
        "reference_low": 13.0,
        "reference_high": 17.0,
        "flag": "normal",
        "collected_at": COLLECTED_0815,
    },
    {
        "code": "ldl_cholesterol",
        "name": "LDL Cholesterol",
        "loinc_code": "13457-7",
        "panel": "Lipid Profile",
        "value": 3.4,
        "value_text": "3.4",
        "unit": "mmol/L",
        "reference_low": None,
        "reference_high": 3.0,
        "flag": "high",
        "collected_at": COLLECTED_0815,
    },
    {
        # bounded: "<0.3" is not a measurement, although the item carries value 0.3
        "code": "c_reactive_protein_hs",
        "name": "hs-CRP",
        "loinc_code": "30522-7",
        "panel": "Inflammation",
        "value": None,
        "value_text": "<0.3",
        "unit": "mg/L",
        "reference_low": None,
        "reference_high": None,
        "flag": None,
        "collected_at": COLLECTED_DAY,
    },
    {
        "code": "vitamin_d_25_hydroxy",
        "name": "25-Hydroxyvitamin D",
        "loinc_code": "1989-3",
        "panel": None,
        "value": 48.0,
        "value_text": "48",
        "unit": "nmol/L",
        "reference_low": 50.0,
        "reference_high": 175.0,
        "flag": "low",
        "collected_at": COLLECTED_DAY,
    },
    {
        # unmatched (no biomarker, no LOINC): the code is a slug of the display name
        "code": "nitrite",
        "name": "Nitrite",
        "loinc_code": None,
        "panel": "Urinalysis",
        "value": None,
        "value_text": "Negative",
        "unit": None,
        "reference_low": None,
        "reference_high": None,
        "flag": None,
        "collected_at": COLLECTED_DAY,
    },
]

# Read from tests/fixtures/terra/lab_report_completed.json: the panel comes from data.panels[] by
# biomarker.panel_id, the range from reference_ranges[] (no applied_range is given).
COMPLETED_ROWS = [
    {
        "code": "ldl_cholesterol",
        "name": "LDL Cholesterol",
        "loinc_code": "13457-7",
        "panel": "LIPID PROFILE",
        "value": 3.4,
        "value_text": "3.4",
        "unit": "mmol/L",
        "reference_low": None,
        "reference_high": 3.0,
        "flag": "high",
        "collected_at": COLLECTED_0815,
    },
    {
        "code": "hdl_cholesterol",
        "name": "HDL Cholesterol",
        "loinc_code": "2085-9",
        "panel": "LIPID PROFILE",
        "value": 1.52,
        "value_text": "1.52",
        "unit": "mmol/L",
        "reference_low": 1.0,
        "reference_high": None,
        "flag": "normal",
        "collected_at": COLLECTED_0815,
    },
    {
        "code": "c_reactive_protein_hs",
        "name": "hs-CRP",
        "loinc_code": "30522-7",
        "panel": "INFLAMMATION",
        "value": None,
        "value_text": "<0.3",
        "unit": "mg/L",
        "reference_low": None,
        "reference_high": 5.0,
        "flag": None,
        "collected_at": COLLECTED_DAY,
    },
]


def rows_of(payload: dict[str, Any], patient: Patient | None = None) -> list[dict[str, Any]]:
    parsed = parse_biomarkers(payload, patient) if patient else parse_biomarkers(payload)
    assert all(model is Biomarker for model, _ in parsed.rows)
    return [values for _, values in parsed.rows]


def legacy(*items: dict[str, Any]) -> dict[str, Any]:
    return {"upload_id": UPLOAD_ID, "data": list(items)}


def completed(*results: dict[str, Any], **data: Any) -> dict[str, Any]:
    return {"type": "lab_report.completed", "upload_id": UPLOAD_ID, "data": {"results": list(results), **data}}


# parse_biomarkers: pure ---------------------------------------------------------------------------


def test_the_legacy_shape_maps_every_column() -> None:
    parsed = parse_biomarkers(json.loads(sample("lab_report")))
    assert [values for _, values in parsed.rows] == LEGACY_ROWS
    assert parsed.warnings == []


def test_the_completed_event_maps_every_column_from_its_nested_results() -> None:
    parsed = parse_biomarkers(json.loads(sample("lab_report_completed")))
    assert [values for _, values in parsed.rows] == COMPLETED_ROWS
    assert parsed.warnings == []


def test_an_unmatched_item_without_a_display_name_is_coded_by_the_labs_own_name() -> None:
    rows = rows_of(legacy({"original_name": "Free T3 (pmol/L)", "raw_value": "4.9", "value": 4.9}))
    assert (rows[0]["code"], rows[0]["name"], rows[0]["value"]) == ("free_t3_pmol_l", "Free T3 (pmol/L)", 4.9)


def test_the_loinc_code_is_the_code_when_there_is_no_biomarker() -> None:
    rows = rows_of(legacy({"display_name": "Lipase", "loinc_code": "3040-3", "value": 31}))
    assert (rows[0]["code"], rows[0]["loinc_code"], rows[0]["value"]) == ("3040-3", "3040-3", 31.0)


def test_an_unmatched_nested_result_is_kept_under_a_slug_of_its_name() -> None:
    result = {
        "source": {"name": "Vitamin K1", "value": "0.8", "units": "ug/L"},
        "biomarker": {"key": None, "display_name": "Vitamin K1 (Phylloquinone)"},
        "measurement": {"type": "numeric", "numeric": 0.8, "units": "ug/L"},
    }
    rows = rows_of(completed(result))
    assert rows[0]["code"] == "vitamin_k1_phylloquinone"
    assert (rows[0]["value"], rows[0]["unit"], rows[0]["flag"]) == (0.8, "ug/L", None)


def test_an_item_with_no_biomarker_loinc_or_name_is_skipped_with_a_warning() -> None:
    parsed = parse_biomarkers(legacy({"value": 5}, {"biomarker": "iron", "value": 17}))
    assert [values["code"] for _, values in parsed.rows] == ["iron"]
    assert parsed.warnings == ["data[0]: no biomarker, loinc_code or name; skipped"]


def test_a_qualitative_nested_result_keeps_its_text_and_no_value() -> None:
    result = {
        "source": {"name": "Urine nitrite"},
        "biomarker": {"key": "urine_nitrite", "display_name": "Nitrite"},
        "measurement": {"type": "qualitative", "qualitative": {"text": "Negative", "code": "neg"}},
        "interpretation": {"flag": "normal", "source": "report"},
    }
    rows = rows_of(completed(result))
    assert (rows[0]["value"], rows[0]["value_text"], rows[0]["flag"]) == (None, "Negative", "normal")


def test_a_bounded_result_without_the_source_text_is_written_from_its_operator() -> None:
    result = {
        "biomarker": {"key": "troponin_t"},
        "measurement": {"type": "bounded", "bounded": {"operator": "gt", "value": 2000}},
    }
    rows = rows_of(completed(result))
    assert (rows[0]["value"], rows[0]["value_text"]) == (None, ">2000")


def test_a_bounded_raw_value_is_not_a_number_even_without_a_result_type() -> None:
    rows = rows_of(legacy({"biomarker": "tsh", "raw_value": "< 0.01", "value": 0.01}))
    assert (rows[0]["value"], rows[0]["value_text"]) == (None, "< 0.01")


def test_numbers_sent_as_strings_are_numbers_and_a_non_number_is_null_with_a_warning() -> None:
    parsed = parse_biomarkers(
        legacy(
            {"biomarker": "ferritin", "value": "85.5", "reference_ranges": [{"lower_bound": "30", "upper_bound": 400}]},
            {"biomarker": "iron", "value": "lots"},
        )
    )
    ferritin, iron = (values for _, values in parsed.rows)
    assert (ferritin["value"], ferritin["reference_low"], ferritin["flag"]) == (85.5, 30.0, "normal")
    assert iron["value"] is None
    assert parsed.warnings == ["value: 'lots' is not a number; stored as null"]


@pytest.mark.parametrize(
    ("value", "ranges", "reported", "flag"),
    [
        (2.0, [{"lower": 2.0, "upper": 4.0, "type": "normal"}], None, "normal"),  # bounds are inclusive
        (4.0, [{"lower": 2.0, "upper": 4.0, "type": "normal"}], None, "normal"),
        (1.9, [{"lower": 2.0, "upper": 4.0, "type": "normal"}], None, "low"),
        (4.1, [{"upper": 4.0}], None, "high"),
        # the lab's own interpretation wins over the one computed from the range
        (3.0, [{"lower": 2.0, "upper": 4.0, "type": "normal"}], "high", "high"),
        (9.0, [{"lower": 2.0, "upper": 4.0, "type": "normal"}], "normal", "normal"),
        # no range: the report's own interpretation, when it is one of ours
        (3.0, [], "high", "high"),
        (3.0, [], "H", None),
        (3.0, [], None, None),
        # a range of another kind is not the normal range
        (3.0, [{"lower": 5.0, "type": "critical"}, {"upper": 2.5, "type": "normal"}], None, "high"),
    ],
)
def test_the_labs_own_flag_wins_else_the_flag_is_computed_against_the_range(
    value: float, ranges: list[dict[str, Any]], reported: str | None, flag: str | None
) -> None:
    result = {
        "biomarker": {"key": "ferritin"},
        "measurement": {"type": "numeric", "numeric": value},
        "interpretation": {"flag": reported},
        "reference_ranges": ranges,
    }
    assert rows_of(completed(result))[0]["flag"] == flag


def test_the_applied_range_wins_over_the_listed_ranges() -> None:
    result = {
        "biomarker": {"key": "testosterone_total"},
        "measurement": {"type": "numeric", "numeric": 9.0},
        "interpretation": {"flag": "low", "source": "computed", "applied_range": {"lower": 10.0, "upper": 30.0}},
        "reference_ranges": [{"lower": 0.3, "upper": 2.0, "type": "normal", "context": {"sex": "female"}}],
    }
    row = rows_of(completed(result))[0]
    assert (row["reference_low"], row["reference_high"], row["flag"]) == (10.0, 30.0, "low")


@pytest.mark.parametrize(
    ("collection_date", "collection_time", "collected_at"),
    [
        ("2026-11-18", "08:15", COLLECTED_0815),
        ("2026-11-18", "08:15:30Z", datetime(2026, 11, 18, 8, 15, 30, tzinfo=UTC)),
        ("2026-11-18", "10:15+02:00", datetime.fromisoformat("2026-11-18T10:15+02:00")),
        ("2026-11-18", None, COLLECTED_DAY),
        ("2026-11-18T07:00:00+01:00", None, datetime.fromisoformat("2026-11-18T07:00+01:00")),
        (None, "08:15", None),
    ],
)
def test_collected_at_is_the_collection_date_and_time_in_utc_when_no_offset(
    collection_date: str | None, collection_time: str | None, collected_at: datetime | None
) -> None:
    item = {"biomarker": "iron", "collection_date": collection_date, "collection_time": collection_time}
    assert rows_of(legacy(item))[0]["collected_at"] == collected_at


def test_a_flat_result_inside_the_completed_envelope_is_read_as_well() -> None:
    item = json.loads(sample("lab_report"))["data"][0]
    assert rows_of(completed(item)) == [LEGACY_ROWS[0]]


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"upload_id": UPLOAD_ID}, "data is missing or neither a list nor an object"),
        ({"type": "lab_report.completed", "data": "parsed"}, "data is missing or neither a list nor an object"),
        ({"upload_id": UPLOAD_ID, "data": [{"biomarker": "iron"}, 7]}, "data[1] is not an object"),
        ({"type": "lab_report.completed", "data": {"session_id": "1"}}, "data.results is missing or not a list"),
        ({"type": "lab_report.completed", "data": {"results": ["x"]}}, "data.results[0] is not an object"),
    ],
)
def test_a_wrong_structure_is_bad_data_naming_the_field(payload: dict[str, Any], error: str) -> None:
    with pytest.raises(BadData) as raised:
        parse_biomarkers(payload)
    assert str(raised.value) == error


# Through the worker -------------------------------------------------------------------------------


def replay(raw_event: RawEvent) -> RawEvent:
    RawEvent.objects.filter(pk=raw_event.pk).update(state=RawEventState.RECEIVED)
    return process(raw_event)


def upload(terra_upload_id: str | None = UPLOAD_ID, **fields: Any) -> LabUpload:
    user, _ = User.objects.get_or_create(id=OUR_USER)
    return LabUpload.objects.create(user=user, filename="bloods.pdf", terra_upload_id=terra_upload_id, **fields)


def stored_rows(lab_upload: LabUpload) -> list[dict[str, Any]]:
    columns = list(LEGACY_ROWS[0])
    return list(Biomarker.objects.filter(lab_upload=lab_upload).order_by("pk").values(*columns))


def test_a_report_for_an_unknown_upload_is_parked_no_lab_upload() -> None:
    raw_event = process(store(sample("lab_report")))
    assert (raw_event.event_type, raw_event.reference_id) == ("lab_report", UPLOAD_ID)
    assert (raw_event.state, raw_event.process_error, raw_event.processed_at) == (
        RawEventState.PARKED,
        "no_lab_upload",
        None,
    )
    assert Biomarker.objects.count() == 0


def test_a_parked_report_is_unparked_when_the_upload_gets_its_terra_id_then_parsed(
    django_capture_on_commit_callbacks, monkeypatch
) -> None:
    # given: the report arrived before the submission task stored Terra's upload id
    parked = process(store(sample("lab_report")))
    lab_upload = upload(terra_upload_id=None)
    published: list[tuple[list[int], str | None]] = []
    monkeypatch.setattr(connections, "publish_raw_events", lambda ids, request_id: published.append((ids, request_id)))
    # when
    with django_capture_on_commit_callbacks(execute=True):
        unparked = lab_upload_set_terra_id(
            lab_upload_id=lab_upload.pk, terra_upload_id=UPLOAD_ID, terra_session_id="312058847112704001"
        )
    # then: back to received, and nudged once the transaction commits
    assert unparked == [parked.pk]
    assert published == [([parked.pk], None)]
    parked.refresh_from_db()
    assert (parked.state, parked.process_error, parked.lease_until) == (RawEventState.RECEIVED, None, None)
    assert parked.queued_at > parked.received_at
    lab_upload.refresh_from_db()
    assert (lab_upload.terra_upload_id, lab_upload.terra_session_id) == (UPLOAD_ID, "312058847112704001")
    # and the worker now writes the biomarkers and marks the upload parsed
    raw_event = process(parked)
    assert (raw_event.state, raw_event.process_error, raw_event.user_id) == (RawEventState.PROCESSED, None, OUR_USER)
    assert stored_rows(lab_upload) == LEGACY_ROWS
    assert set(Biomarker.objects.values_list("user_id", "provider", "terra_user_id", "raw_event_id")) == {
        (OUR_USER, "", "", raw_event.pk)
    }
    lab_upload.refresh_from_db()
    assert (lab_upload.status, lab_upload.error) == (LabUploadStatus.PARSED, None)
    assert lab_upload.parsed_at is not None


def test_setting_the_terra_id_unparks_only_lab_reports_waiting_for_that_upload(
    django_capture_on_commit_callbacks,
) -> None:
    waiting = process(store(sample("lab_report")))
    other_upload = process(store(body_of({"upload_id": "upl_other", "data": []})))
    other_reason = store(body_of({"type": "daily", "user": {"user_id": "t1", "reference_id": UPLOAD_ID}, "data": []}))
    RawEvent.objects.filter(pk=other_reason.pk).update(
        state=RawEventState.PARKED, process_error="no_connection_for_terra_user"
    )
    lab_upload = upload(terra_upload_id=None)
    with django_capture_on_commit_callbacks() as after_commit:
        unparked = lab_upload_set_terra_id(
            lab_upload_id=lab_upload.pk, terra_upload_id=UPLOAD_ID, terra_session_id=None
        )
    assert unparked == [waiting.pk]
    assert len(after_commit) == 1
    states = dict(RawEvent.objects.values_list("pk", "state"))
    assert states == {
        waiting.pk: RawEventState.RECEIVED,
        other_upload.pk: RawEventState.PARKED,
        other_reason.pk: RawEventState.PARKED,
    }


def test_setting_the_terra_id_with_nothing_parked_publishes_nothing(django_capture_on_commit_callbacks) -> None:
    lab_upload = upload(terra_upload_id=None)
    with django_capture_on_commit_callbacks() as after_commit:
        assert (
            lab_upload_set_terra_id(lab_upload_id=lab_upload.pk, terra_upload_id="upl_new", terra_session_id="9") == []
        )
    assert after_commit == []
    lab_upload.refresh_from_db()
    assert (lab_upload.terra_upload_id, lab_upload.terra_session_id) == ("upl_new", "9")


def test_setting_the_terra_id_of_an_unknown_upload_raises() -> None:
    with pytest.raises(LabUpload.DoesNotExist):
        lab_upload_set_terra_id(lab_upload_id=-1, terra_upload_id="upl_new", terra_session_id=None)


def test_a_terra_id_belongs_to_one_upload_only() -> None:
    upload()
    second = LabUpload.objects.create(user_id=OUR_USER)
    with pytest.raises(IntegrityError):
        lab_upload_set_terra_id(lab_upload_id=second.pk, terra_upload_id=UPLOAD_ID, terra_session_id=None)


def test_lab_report_failed_marks_the_upload_failed_with_terras_error() -> None:
    lab_upload = upload(FAILED_UPLOAD_ID)
    raw_event = process(store(sample("lab_report_failed")))
    assert (raw_event.state, raw_event.process_error, raw_event.user_id) == (RawEventState.PROCESSED, None, OUR_USER)
    lab_upload.refresh_from_db()
    assert (lab_upload.status, lab_upload.error, lab_upload.parsed_at) == (
        LabUploadStatus.FAILED,
        "file_unreadable: The uploaded file could not be read.",
        None,
    )
    assert Biomarker.objects.count() == 0


def test_a_failure_without_details_still_fails_the_upload() -> None:
    lab_upload = upload()
    process(store(body_of({"type": "lab_report.failed", "upload_id": UPLOAD_ID, "data": {"session_id": "1"}})))
    lab_upload.refresh_from_db()
    assert (lab_upload.status, lab_upload.error) == (LabUploadStatus.FAILED, "Terra could not parse the lab report")


def test_lab_report_completed_writes_its_biomarkers() -> None:
    lab_upload = upload()
    raw_event = process(store(sample("lab_report_completed")))
    assert raw_event.state == RawEventState.PROCESSED
    assert stored_rows(lab_upload) == COMPLETED_ROWS
    lab_upload.refresh_from_db()
    assert lab_upload.status == LabUploadStatus.PARSED


def test_a_completed_event_without_upload_id_is_matched_by_its_session_id() -> None:
    lab_upload = upload(terra_upload_id=None, terra_session_id="312058847112704001")
    payload = json.loads(sample("lab_report_completed"))
    del payload["upload_id"]
    raw_event = process(store(body_of(payload)))
    assert raw_event.state == RawEventState.PROCESSED
    assert stored_rows(lab_upload) == COMPLETED_ROWS


def test_processing_a_report_twice_gives_the_same_rows() -> None:
    lab_upload = upload()
    raw_event = process(store(sample("lab_report")))
    first = list(Biomarker.objects.order_by("pk").values())
    raw_event = replay(raw_event)
    assert raw_event.state == RawEventState.PROCESSED
    assert list(Biomarker.objects.order_by("pk").values()) == first
    assert stored_rows(lab_upload) == LEGACY_ROWS


def test_a_later_report_of_the_same_upload_updates_its_rows_and_adds_new_codes() -> None:
    lab_upload = upload()
    process(store(sample("lab_report")))
    later = process(store(sample("lab_report_completed")))
    rows = {row["code"]: row for row in stored_rows(lab_upload)}
    assert sorted(rows) == sorted(
        ["hemoglobin", "ldl_cholesterol", "c_reactive_protein_hs", "vitamin_d_25_hydroxy", "nitrite", "hdl_cholesterol"]
    )
    assert rows["ldl_cholesterol"] == COMPLETED_ROWS[0]
    assert rows["hemoglobin"] == LEGACY_ROWS[0]
    assert Biomarker.objects.get(lab_upload=lab_upload, code="hdl_cholesterol").raw_event_id == later.pk


def test_biomarkers_wide_shows_the_tracked_codes_of_an_upload() -> None:
    lab_upload = upload()
    process(store(sample("lab_report")))
    wide = BiomarkersWide.objects.get(lab_upload=lab_upload)
    assert (wide.pk, wide.user_id, wide.collected_at) == (lab_upload.pk, OUR_USER, COLLECTED_DAY)
    assert (wide.hemoglobin, wide.ldl_cholesterol, wide.vitamin_d_25_hydroxy) == (14.2, 3.4, 48.0)
    assert wide.c_reactive_protein_hs is None  # "<0.3" has no value
    assert (wide.hdl_cholesterol, wide.ferritin) == (None, None)


def test_a_report_with_a_wrong_structure_is_dead_lettered_even_before_its_upload_exists() -> None:
    body = body_of({"type": "lab_report.completed", "upload_id": "upl_unknown", "data": {"results": "none"}})
    raw_event = store(body)
    result = raw_event_process(raw_event_id=raw_event.pk)
    raw_event.refresh_from_db()
    assert result.status == ProcessStatus.DEAD
    assert (raw_event.state, raw_event.process_error) == (
        RawEventState.DEAD,
        "bad_data: data.results is missing or not a list",
    )


# Reference ranges chosen by the report's patient --------------------------------------------------

SEXED_RANGES = [
    {"lower": 13.0, "upper": 17.0, "type": "normal", "context": {"sex": "male"}},
    {"lower": 12.0, "upper": 15.0, "type": "normal", "context": {"sex": "female"}},
]
AGED_RANGES = [
    {"lower": 11.0, "upper": 15.5, "type": "normal", "context": {"age_lower": 0, "age_upper": 17}},
    {"lower": 13.0, "upper": 17.0, "type": "normal", "context": {"age_lower": 18}},
    {"lower": 1.0, "upper": 99.0, "type": "normal"},  # no context: the least specific
]


def hemoglobin(value: float, ranges: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "source": {"name": "Haemoglobin", "collection_date": "2026-11-18"},
        "biomarker": {"key": "hemoglobin"},
        "measurement": {"type": "numeric", "numeric": value},
        "interpretation": {"flag": None, "source": "none"},
        "reference_ranges": ranges,
    }


@pytest.mark.parametrize(
    ("patient", "ranges", "expected"),
    [
        (Patient(sex="female"), SEXED_RANGES, (12.0, 15.0, "normal")),
        (Patient(sex="male"), SEXED_RANGES, (13.0, 17.0, "low")),
        # a sex we do not know, and two sexed ranges: neither is this patient's for sure
        (Patient(), SEXED_RANGES, (None, None, None)),
        # age at collection from the birth date: 17 on 2026-11-18, 18 the next day
        (Patient(date_of_birth=date(2009, 11, 19)), AGED_RANGES, (11.0, 15.5, "normal")),
        (Patient(date_of_birth=date(2008, 11, 18)), AGED_RANGES, (13.0, 17.0, "low")),
        (Patient(age=40), AGED_RANGES, (13.0, 17.0, "low")),
        (Patient(), AGED_RANGES, (1.0, 99.0, "normal")),
        # a condition we cannot check (pregnancy) is not taken when a checkable range exists
        (
            Patient(sex="female"),
            [
                {"lower": 10.5, "upper": 14.0, "context": {"sex": "female", "pregnancy_status": "pregnant"}},
                *SEXED_RANGES,
            ],
            (12.0, 15.0, "normal"),
        ),
        # the one range the lab printed is this patient's, whatever its context says
        (Patient(), SEXED_RANGES[:1], (13.0, 17.0, "low")),
        # ... unless it contradicts what we know
        (Patient(sex="female"), SEXED_RANGES[:1], (None, None, None)),
    ],
)
def test_a_range_with_a_context_is_chosen_by_the_patients_sex_and_age(
    patient: Patient, ranges: list[dict[str, Any]], expected: tuple[Any, ...]
) -> None:
    row = rows_of(completed(hemoglobin(12.5, ranges)), patient)[0]
    assert (row["reference_low"], row["reference_high"], row["flag"]) == expected


def test_the_flat_layouts_ranges_are_chosen_by_the_patient_too() -> None:
    item = {
        "biomarker": "hemoglobin",
        "value": 12.5,
        "collection_date": "2026-11-18",
        "reference_ranges": [
            {"lower_bound": 13.0, "upper_bound": 17.0, "classification": "normal", "context": {"sex": "male"}},
            {"lower_bound": 12.0, "upper_bound": 15.0, "classification": "normal", "context": {"sex": "female"}},
        ],
    }
    row = rows_of(legacy(item), Patient(sex="female"))[0]
    assert (row["reference_low"], row["reference_high"], row["flag"]) == (12.0, 15.0, "normal")


def test_the_worker_chooses_ranges_by_the_users_provider_profile() -> None:
    lab_upload = upload()
    Athlete.objects.create(user_id=OUR_USER, provider="GARMIN", sex="FEMALE", date_of_birth=date(1990, 1, 1))
    payload = completed(hemoglobin(12.5, SEXED_RANGES))
    raw_event = process(store(body_of(payload)))
    assert raw_event.state == RawEventState.PROCESSED
    row = Biomarker.objects.get(lab_upload=lab_upload)
    assert (row.reference_low, row.reference_high, row.flag) == (12.0, 15.0, "normal")


def test_the_labs_printed_flag_is_used_when_the_interpretation_has_none() -> None:
    result = hemoglobin(12.5, [{"lower": 13.0, "upper": 17.0}])
    result["source"]["flag"] = "N"
    assert rows_of(completed(result))[0]["flag"] == "normal"


# Reports without an upload id -----------------------------------------------------------------------

SESSION_ID = "312058847112704001"  # lab_report_completed.json


def without_upload_id(name: str = "lab_report_completed") -> bytes:
    payload = json.loads(sample(name))
    del payload["upload_id"]
    return body_of(payload)


def test_a_report_without_upload_id_is_matched_to_the_users_one_submitted_upload_and_remembers_its_session() -> None:
    lab_upload = upload(terra_upload_id="upl_submitted")  # Terra answered the submission without a session id
    raw_event = process(store(without_upload_id()))
    assert (raw_event.state, raw_event.user_id) == (RawEventState.PROCESSED, OUR_USER)
    assert stored_rows(lab_upload) == COMPLETED_ROWS
    lab_upload.refresh_from_db()
    assert (lab_upload.status, lab_upload.terra_session_id) == (LabUploadStatus.PARSED, SESSION_ID)
    # A reprocess of the session (a new event id, no upload id) now matches by the session id.
    again = json.loads(without_upload_id())
    again["event_id"] = "evt_reprocessed"
    assert process(store(body_of(again))).state == RawEventState.PROCESSED


def test_a_report_without_upload_id_arriving_before_the_submission_is_recorded_is_unparked_by_it(
    django_capture_on_commit_callbacks, monkeypatch
) -> None:
    monkeypatch.setattr(connections, "publish_raw_events", lambda ids, request_id: None)
    lab_upload = upload(terra_upload_id=None)
    parked = process(store(without_upload_id()))
    assert (parked.state, parked.process_error, parked.reference_id, parked.user_id) == (
        RawEventState.PARKED,
        "no_lab_upload",
        "",
        OUR_USER,
    )
    with django_capture_on_commit_callbacks(execute=True):
        unparked = lab_upload_set_terra_id(
            lab_upload_id=lab_upload.pk, terra_upload_id="upl_new", terra_session_id=None
        )
    assert unparked == [parked.pk]
    assert process(parked).state == RawEventState.PROCESSED
    assert stored_rows(lab_upload) == COMPLETED_ROWS


def test_a_report_without_upload_id_waits_while_two_uploads_could_be_its_own_then_takes_the_one_left(
    django_capture_on_commit_callbacks, monkeypatch
) -> None:
    monkeypatch.setattr(connections, "publish_raw_events", lambda ids, request_id: None)
    first = upload(terra_upload_id=UPLOAD_ID)
    second = upload(terra_upload_id="upl_second")
    parked = process(store(without_upload_id()))
    assert parked.state == RawEventState.PARKED
    # The first upload's own report (with its upload id) answers it, so the parked one can only be the second's.
    with django_capture_on_commit_callbacks(execute=True):
        process(store(sample("lab_report")))
    parked.refresh_from_db()
    assert parked.state == RawEventState.RECEIVED
    assert process(parked).state == RawEventState.PROCESSED
    assert stored_rows(second) == COMPLETED_ROWS
    assert stored_rows(first) == LEGACY_ROWS


def test_a_report_without_upload_id_for_nobody_we_know_is_parked() -> None:
    payload = json.loads(without_upload_id())
    payload["data"]["reference_id"] = "user_unknown"
    raw_event = process(store(body_of(payload)))
    assert (raw_event.state, raw_event.user_id) == (RawEventState.PARKED, None)


# Failures after success -----------------------------------------------------------------------------


def test_a_failed_report_after_a_completed_one_leaves_the_upload_parsed() -> None:
    lab_upload = upload(terra_upload_id=FAILED_UPLOAD_ID)
    completed_body = json.loads(sample("lab_report_completed"))
    completed_body["upload_id"] = FAILED_UPLOAD_ID
    process(store(body_of(completed_body)))
    raw_event = process(store(sample("lab_report_failed")))
    assert raw_event.state == RawEventState.PROCESSED
    lab_upload.refresh_from_db()
    assert (lab_upload.status, lab_upload.error) == (LabUploadStatus.PARSED, None)
    assert lab_upload.parsed_at is not None
    assert stored_rows(lab_upload) == COMPLETED_ROWS


@pytest.mark.parametrize("how", ["submission_failed", "deleted"])
def test_a_report_without_upload_id_waits_for_an_upload_still_being_sent_then_takes_the_one_left(
    django_capture_on_commit_callbacks, monkeypatch, settings, how: str
) -> None:
    monkeypatch.setattr(connections, "publish_raw_events", lambda ids, request_id: None)
    waiting = upload(terra_upload_id="upl_answered")
    being_sent = upload(terra_upload_id=None)  # Terra may have its file and not yet our record of it
    parked = process(store(without_upload_id()))
    assert parked.state == RawEventState.PARKED
    with django_capture_on_commit_callbacks(execute=True):
        if how == "deleted":
            assert lab_upload_delete(user=User.objects.get(pk=OUR_USER), lab_upload_id=being_sent.pk)
        else:
            settings.TERRA_API_CONFIGURED = False
            assert lab_upload_submit(lab_upload_id=being_sent.pk) == SubmitOutcome.FAILED
    parked.refresh_from_db()
    assert parked.state == RawEventState.RECEIVED
    assert process(parked).state == RawEventState.PROCESSED
    assert stored_rows(waiting) == COMPLETED_ROWS
