"""POST /v1/import and GET /v1/import/<id>, and the import job run in-process: what is
stored, what enters the ledger and how it is counted, checkpoints, failure and its DLQ copy.

Publishing is recorded, not sent: these tests never put messages on the shared Redis.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.files.storage import storages
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import User
from accounts.tokens import cli_token_issue
from ingest.classify import classify
from ingest.imports import services
from ingest.imports.services import ImportRunStatus, import_job_process, import_jobs_requeue
from ingest.models import (
    DailySummary,
    ImportJob,
    ImportJobStatus,
    LabUpload,
    RawEvent,
    RawEventSource,
    RawEventState,
    TerraConnection,
)
from ingest.services.processing import raw_event_process
from ingest.services.webhook import dedup_key_for, raw_event_insert
from tests.conftest import database_url_for_tests
from tests.terra import sample

pytestmark = [pytest.mark.django_db, pytest.mark.urls("ingest.imports.urls")]

USER_A = "user_import_a"
USER_B = "user_import_b"
MIB = 1024 * 1024


# Payloads -----------------------------------------------------------------------------------------


def daily_body(terra_user_id: str, day: date, steps: int) -> dict[str, Any]:
    """A small daily payload that normalizes to one daily_summary row."""
    return {
        "type": "daily",
        "user": {"user_id": terra_user_id, "provider": "GARMIN", "reference_id": "someone_else"},
        "version": "2022-03-16",
        "data": [
            {
                "metadata": {
                    "start_time": f"{day.isoformat()}T00:00:00.000000+00:00",
                    "end_time": f"{(day + timedelta(days=1)).isoformat()}T00:00:00.000000+00:00",
                    "upload_type": 1,
                },
                "distance_data": {"steps": steps, "distance_meters": steps * 0.78},
                "heart_rate_data": {"summary": {"avg_hr_bpm": 60 + steps % 20, "resting_hr_bpm": 52.0}},
            }
        ],
    }


# Entries that are not Terra payloads, with the start of the error each gets.
MALFORMED: list[tuple[bytes, str]] = [
    (b'"just a string"', "not a JSON object"),
    (b"[1, 2, 3]", "not a JSON object"),
    (b'{"no_type": true, "data": []}', "not a Terra payload"),
    (b'{"type": "deauth", "user": {"user_id": "t-1", "provider": "OURA"}}', "`deauth` is a connection event"),
    (b'{"type": "s3_payload", "url": "http://169.254.169.254/"}', "`s3_payload` cannot be imported"),
]
NOT_JSON_LINE = (b"this line is not JSON", "not JSON")


@dataclass
class Generated:
    entries: list[bytes]
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.entries)

    def as_array(self) -> bytes:
        return b"[\n" + b",\n".join(self.entries) + b"\n]\n"

    def as_ndjson(self) -> bytes:
        return b"\n".join(self.entries) + b"\n"


def generate(count: int, run: str, *, ndjson: bool = False) -> Generated:
    """`count` entries: daily payloads of 37 Terra users on distinct days, every 50th entry a
    byte-for-byte repeat of the one before (a duplicate), and every 997th (from the 13th) one that
    is not a Terra payload (in NDJSON, some not JSON at all). The counters it must give are counted
    as it goes."""
    generated = Generated(entries=[])
    seen: set[bytes] = set()
    bad = [NOT_JSON_LINE, *MALFORMED] if ndjson else MALFORMED
    for i in range(count):
        if i % 997 == 13:
            entry, error = bad[(i // 997) % len(bad)]
            generated.rejected += 1
            if len(generated.errors) < 20:
                generated.errors.append({"index": i, "error": error})
        elif i % 50 == 49 and generated.entries[-1] in seen:
            entry = generated.entries[-1]
            generated.duplicates += 1
        else:
            body = daily_body(f"terra-{run}-{i % 37}", date(2020, 1, 1) + timedelta(days=i // 37), steps=1000 + i)
            entry = json.dumps(body, separators=(",", ":")).encode()
            seen.add(entry)
            generated.accepted += 1
        generated.entries.append(entry)
    return generated


# Fixtures -----------------------------------------------------------------------------------------


@dataclass
class Published:
    jobs: list[tuple[int, str | None]] = field(default_factory=list)
    raw_events: list[list[int]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Published:
    """Every publish the import code makes, recorded instead of sent."""
    record = Published()

    def job(import_job_id: int, request_id: str | None = None) -> bool:
        record.jobs.append((import_job_id, request_id))
        return True

    def raw_events(ids: Any, request_id: str | None = None) -> int:
        record.raw_events.append(list(ids))
        return len(record.raw_events[-1])

    monkeypatch.setattr(services, "publish_import_job", job)
    monkeypatch.setattr(services, "publish_raw_events", raw_events)
    monkeypatch.setattr(services, "publish_dead_letter_copy", record.dead_letters.append)
    return record


@pytest.fixture
def upload_dir(tmp_path: Path, settings: Any) -> Path:
    """The `uploads` storage on a temporary directory."""
    settings.STORAGES = {
        **settings.STORAGES,
        "uploads": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}},
    }
    return tmp_path


@pytest.fixture
def user_a() -> User:
    return User.objects.create(id=USER_A)


@pytest.fixture
def user_b() -> User:
    return User.objects.create(id=USER_B)


def client_for(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


@pytest.fixture
def client_a(user_a: User) -> APIClient:
    return client_for(user_a)


Commits = Callable[..., Any]


@pytest.fixture
def commits(django_capture_on_commit_callbacks: Any) -> Commits:
    """Call a function as if its transactions committed: its on_commit callbacks run as it returns
    (the test's own transaction never commits)."""

    def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return function(*args, **kwargs)

    return call


def post_body(client: APIClient, body: bytes, content_type: str = "application/json") -> Any:
    return client.generic("POST", "/v1/import", body, content_type=content_type)


def post_file(client: APIClient, content: bytes, name: str = "export.json", field_name: str = "file") -> Any:
    upload = io.BytesIO(content)
    upload.name = name
    return client.post("/v1/import", {field_name: upload}, format="multipart")


def stored(job: ImportJob) -> bytes:
    with storages["uploads"].open(job.storage_key, "rb") as file:
        return file.read()


def run_job(job_id: int, **options: Any) -> services.ImportRunResult:
    return import_job_process(import_job_id=job_id, **options)


def error_code(response: Any) -> str:
    return response.json()["error"]["code"]


# POST /v1/import ----------------------------------------------------------------------------------


def test_a_json_array_body_is_stored_and_its_job_queued_after_commit(
    client_a: APIClient, upload_dir: Path, published: Published, commits: Commits
) -> None:
    body = json.dumps([daily_body("t-1", date(2026, 1, 1), 100)]).encode()
    response = commits(post_body, client_a, body)
    assert response.status_code == 202
    job = ImportJob.objects.get()
    assert response.json() == {"id": job.pk, "status": "pending"}
    assert job.user_id == USER_A
    assert job.format == "json"
    assert job.size_bytes == len(body)
    assert job.storage_key == f"imports/{USER_A}/{job.pk}.json"
    assert stored(job) == body
    assert published.jobs == [(job.pk, response["x-amy-request-id"])]


def test_an_ndjson_body_is_stored_as_ndjson(client_a: APIClient, upload_dir: Path, published: Published) -> None:
    body = b'{"type": "daily", "data": []}\n{"type": "sleep", "data": []}\n'
    for content_type in ("application/x-ndjson", "text/plain; charset=utf-8"):
        response = post_body(client_a, body, content_type)
        assert response.status_code == 202
        job = ImportJob.objects.get(pk=response.json()["id"])
        assert job.format == "ndjson"
        assert job.storage_key == f"imports/{USER_A}/{job.pk}.ndjson"
        assert stored(job) == body


def test_a_multipart_file_is_stored_whatever_its_name(
    client_a: APIClient, upload_dir: Path, published: Published, commits: Commits
) -> None:
    content = b'\xef\xbb\xbf  [{"type": "daily", "data": []}]'
    response = commits(post_file, client_a, content, name="../../etc/passwd.csv")
    assert response.status_code == 202
    job = ImportJob.objects.get(pk=response.json()["id"])
    assert job.storage_key == f"imports/{USER_A}/{job.pk}.json"
    assert stored(job) == content
    assert [job_id for job_id, _ in published.jobs] == [job.pk]


def test_a_multipart_body_without_the_file_field_is_invalid_field(
    client_a: APIClient, upload_dir: Path, published: Published
) -> None:
    response = post_file(client_a, b"[]", field_name="upload")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_field"
    assert response.json()["error"]["details"] == {"field": "file"}
    plain_field = client_a.post("/v1/import", {"file": "[]"}, format="multipart")
    assert plain_field.status_code == 400
    assert error_code(plain_field) == "invalid_field"
    assert not ImportJob.objects.exists()


@pytest.mark.parametrize("content", [b"", b"   \n", b"id,steps\n1,2\n", b"\x89PNG\r\n\x1a\n"])
def test_an_empty_or_non_json_file_is_invalid_field(
    client_a: APIClient, upload_dir: Path, published: Published, content: bytes
) -> None:
    response = post_file(client_a, content)
    assert response.status_code == 400
    assert error_code(response) == "invalid_field"
    assert not ImportJob.objects.exists()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/json"),
        (b" \n\t", "application/json"),
        (b"hello", "text/plain"),
        (b'"a string"', "application/json"),
        (b"<xml/>", "application/xml"),
        (b"[]", "application/x-www-form-urlencoded"),
    ],
)
def test_an_empty_or_non_json_body_is_invalid_request(
    client_a: APIClient, upload_dir: Path, published: Published, body: bytes, content_type: str
) -> None:
    response = post_body(client_a, body, content_type)
    assert response.status_code == 400
    assert error_code(response) == "invalid_request"
    assert not ImportJob.objects.exists()
    assert not any(upload_dir.iterdir())


def test_unauthenticated_callers_are_refused(upload_dir: Path, published: Published) -> None:
    response = APIClient().generic("POST", "/v1/import", b"[]", content_type="application/json")
    assert response.status_code == 401
    assert error_code(response) == "missing_authorization"


class LazyBytes(io.RawIOBase):
    """`size` bytes made as they are read: a head, filler, a tail (never all in memory)."""

    def __init__(self, head: bytes, size: int, tail: bytes = b"", filler: bytes = b" ") -> None:
        self.head, self.tail, self.filler = head, tail, filler
        self.size = size
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.size - self.position)
        if count <= 0:
            return 0
        chunk = bytearray(self.filler * count)
        start, end = self.position, self.position + count
        for offset, part in ((0, self.head), (self.size - len(self.tail), self.tail)):
            lo, hi = max(start, offset), min(end, offset + len(part))
            if lo < hi:
                chunk[lo - start : hi - start] = part[lo - offset : hi - offset]
        buffer[:count] = chunk
        self.position = end
        return count


def post_stream(client: APIClient, stream: LazyBytes, content_type: str) -> Any:
    return client.generic(
        "POST",
        "/v1/import",
        content_type=content_type,
        **{"wsgi.input": io.BufferedReader(stream), "CONTENT_LENGTH": str(stream.size), "CONTENT_TYPE": content_type},
    )


def test_a_body_over_50_mb_is_refused_413_before_it_is_read(
    client_a: APIClient, upload_dir: Path, published: Published
) -> None:
    stream = LazyBytes(b"[", 50 * MIB + 1, tail=b"]")
    response = post_stream(client_a, stream, "application/json")
    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"
    assert stream.position == 0
    assert not ImportJob.objects.exists()
    assert not any(upload_dir.iterdir())


def test_a_multipart_file_over_50_mb_is_refused_413_while_streaming(
    client_a: APIClient, upload_dir: Path, published: Published
) -> None:
    # The body's length fits the cap plus the multipart overhead, so only counting the file's
    # bytes as they stream can refuse it.
    boundary = "import-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.json"\r\n'
        "Content-Type: application/json\r\n\r\n["
    ).encode()
    tail = f"]\r\n--{boundary}--\r\n".encode()
    file_size = 50 * MIB + 1
    stream = LazyBytes(head, len(head) - 1 + file_size + len(tail), tail=tail)
    response = post_stream(client_a, stream, f"multipart/form-data; boundary={boundary}")
    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"
    assert stream.position > 50 * MIB  # it was streamed, and refused at the byte over the cap
    assert not ImportJob.objects.exists()
    assert not any(upload_dir.iterdir())


def test_the_cap_is_inclusive(client_a: APIClient, upload_dir: Path, published: Published, settings: Any) -> None:
    settings.AMY_IMPORT_MAX_BYTES = 64
    body = b"[" + b" " * 62 + b"]"
    assert post_body(client_a, body).status_code == 202
    assert post_body(client_a, body + b" ").status_code == 413
    assert post_file(client_a, body).status_code == 202
    too_large = post_file(client_a, body + b" ")
    assert too_large.status_code == 413
    assert ImportJob.objects.count() == 2


def test_a_storage_outage_answers_503_and_leaves_no_job(
    client_a: APIClient, upload_dir: Path, published: Published, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_save(*args: Any, **kwargs: Any) -> str:
        raise OSError("disk gone")

    monkeypatch.setattr(storages["uploads"], "save", broken_save)
    response = post_body(client_a, b"[]")
    assert response.status_code == 503
    assert error_code(response) == "upstream_unavailable"
    assert not ImportJob.objects.exists()
    assert published.jobs == []


@pytest.mark.parametrize("multipart", [False, True])
def test_an_idempotency_key_replays_the_first_answer_and_imports_once(
    user_a: User, upload_dir: Path, published: Published, multipart: bool
) -> None:
    # The middleware reads a small body to fingerprint it; the view must still get all of it.
    client = APIClient()
    key = f"import-{uuid.uuid4()}"
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {cli_token_issue(user=user_a).token}", HTTP_IDEMPOTENCY_KEY=key)
    body = json.dumps([daily_body("t-idem", date(2026, 2, 2), 5)]).encode()
    answers = [post_file(client, body) if multipart else post_body(client, body) for _ in range(2)]
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json() == answers[1].json()
    assert answers[1]["Idempotent-Replayed"] == "true"
    job = ImportJob.objects.get()
    assert stored(job) == body


# GET /v1/import/<id> ------------------------------------------------------------------------------


def test_the_status_answer_has_the_contract_fields(client_a: APIClient, upload_dir: Path, published: Published) -> None:
    job_id = post_body(client_a, b'[{"type": "daily", "data": []}, 7]').json()["id"]
    pending = client_a.get(f"/v1/import/{job_id}").json()
    assert pending["status"] == "pending"
    assert pending["finished_at"] is None
    run_job(job_id)
    answer = client_a.get(f"/v1/import/{job_id}")
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {
        "id",
        "status",
        "total",
        "accepted",
        "duplicates",
        "rejected",
        "errors",
        "error",
        "created_at",
        "finished_at",
    }
    assert body["id"] == job_id
    assert body["status"] == "completed"
    assert (body["total"], body["accepted"], body["duplicates"], body["rejected"]) == (2, 1, 0, 1)
    assert body["errors"] == [{"index": 1, "error": "not a JSON object"}]
    assert body["error"] is None
    assert body["finished_at"] is not None


def test_another_users_import_is_not_found_exactly_like_an_unknown_one(
    client_a: APIClient, user_b: User, upload_dir: Path, published: Published
) -> None:
    job_id = post_body(client_a, b"[]").json()["id"]
    client_b = client_for(user_b)
    theirs = client_b.get(f"/v1/import/{job_id}")
    unknown = client_b.get(f"/v1/import/{job_id + 1000}")
    huge = client_b.get(f"/v1/import/{2**70}")
    for response in (theirs, unknown, huge):
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "import_not_found"
        assert error["message"] == "No such import."
    assert client_a.get(f"/v1/import/{job_id}").status_code == 200


# The run ------------------------------------------------------------------------------------------


def import_job(user: User, content: bytes, fmt: str = "json") -> ImportJob:
    """A stored file and its pending job, as the upload leaves them."""
    spool = services.ImportSpool(max_bytes=10**9)
    spool.write(content)
    try:
        job = services.import_job_create(user=user, spool=spool, request_id="req_import_test")
    finally:
        spool.close()
    assert job.format == fmt
    return job


def test_ten_thousand_payloads_complete_with_exact_counters(
    client_a: APIClient, upload_dir: Path, published: Published, commits: Commits
) -> None:
    generated = generate(10_000, "ten-k")
    response = post_body(client_a, generated.as_array())
    assert response.status_code == 202
    job_id = response.json()["id"]

    result = commits(run_job, job_id, batch_size=500)

    assert result.status == ImportRunStatus.COMPLETED
    job = ImportJob.objects.get(pk=job_id)
    assert job.status == ImportJobStatus.COMPLETED
    assert (job.total, job.accepted, job.duplicates, job.rejected) == (
        10_000,
        generated.accepted,
        generated.duplicates,
        generated.rejected,
    )
    assert generated.duplicates > 100  # the file exercises duplicates
    assert generated.rejected >= 10  # and rejections
    assert [e["index"] for e in job.errors] == [e["index"] for e in generated.errors]
    for got, expected in zip(job.errors, generated.errors, strict=True):
        assert got["error"].startswith(expected["error"])
    assert job.attempts == 1
    assert job.position == 10_000
    assert job.finished_at is not None
    # the ledger: one row per accepted entry, the importer's, received, published in batches
    rows = RawEvent.objects.filter(import_id=job_id)
    assert rows.count() == generated.accepted
    assert set(rows.values_list("source", "user_id", "state", "event_type", "signature_verified").distinct()) == {
        (RawEventSource.IMPORT, USER_A, RawEventState.RECEIVED, "daily", False)
    }
    published_ids = [i for batch in published.raw_events for i in batch]
    assert sorted(published_ids) == sorted(rows.values_list("pk", flat=True))
    assert len(published.raw_events) == 20  # one publish per batch of 500


def test_an_ndjson_import_counts_lines_that_are_not_json_as_rejected(
    user_a: User, upload_dir: Path, published: Published
) -> None:
    generated = generate(3_000, "ndjson", ndjson=True)
    job = import_job(user_a, b"\n\n" + generated.as_ndjson().replace(b"\n", b"\r\n", 5), "ndjson")
    assert job.format == "ndjson"
    assert run_job(job.pk, batch_size=256).status == ImportRunStatus.COMPLETED
    job.refresh_from_db()
    assert (job.total, job.accepted, job.duplicates, job.rejected) == (
        3_000,
        generated.accepted,
        generated.duplicates,
        generated.rejected,
    )
    assert [e["index"] for e in job.errors] == [e["index"] for e in generated.errors]
    for got, expected in zip(job.errors, generated.errors, strict=True):
        assert got["error"].startswith(expected["error"])
    assert job.errors[0]["error"].startswith("not JSON: Expecting value")


def test_imported_rows_carry_source_user_and_job_and_the_entry_text_verbatim(
    user_a: User, upload_dir: Path, published: Published
) -> None:
    entry = b'{ "type": "daily",\n    "user": {"user_id": "t-verbatim", "provider": "OURA"}, "data": [] }'
    job = import_job(user_a, b"[\n  " + entry + b"\n]")
    run_job(job.pk)
    row = RawEvent.objects.get(import_id=job.pk)
    assert row.source == RawEventSource.IMPORT
    assert row.user_id == USER_A
    assert row.import_id == job.pk
    assert row.payload == entry.decode()
    assert row.dedup_key == dedup_key_for(entry)
    assert (row.event_type, row.terra_user_id, row.provider) == ("daily", "t-verbatim", "OURA")
    assert row.request_id == "req_import_test"


def test_an_imported_payload_normalizes_for_the_importer_whoever_its_terra_user_belongs_to(
    user_a: User, user_b: User, upload_dir: Path, published: Published
) -> None:
    # given: the Terra user the payload names is user B's connection
    TerraConnection.objects.create(user=user_b, terra_user_id="t-owned-by-b", provider="GARMIN")
    body = json.dumps(daily_body("t-owned-by-b", date(2026, 3, 4), 4321)).encode()
    job = import_job(user_a, b"[" + body + b"]")
    run_job(job.pk)
    raw_event = RawEvent.objects.get(import_id=job.pk)
    # when: the worker processes the imported row
    result = raw_event_process(raw_event_id=raw_event.pk)
    # then: the typed row is the importer's
    assert result.state == RawEventState.PROCESSED
    daily = DailySummary.objects.get(raw_event_id=raw_event.pk)
    assert daily.user_id == USER_A
    assert (daily.date, daily.steps) == (date(2026, 3, 4), 4321)
    assert not DailySummary.objects.filter(user_id=USER_B).exists()


def test_an_imported_payload_without_any_connection_is_processed_not_parked(
    user_a: User, upload_dir: Path, published: Published
) -> None:
    body = json.dumps(daily_body("t-nobody", date(2026, 3, 5), 10)).encode()
    job = import_job(user_a, body + b"\n", "ndjson")
    run_job(job.pk)
    raw_event = RawEvent.objects.get(import_id=job.pk)
    assert raw_event_process(raw_event_id=raw_event.pk).state == RawEventState.PROCESSED
    assert DailySummary.objects.get(raw_event_id=raw_event.pk).user_id == USER_A


def test_a_payload_the_webhook_stored_is_a_duplicate_when_imported_byte_for_byte(
    user_a: User, upload_dir: Path, published: Published
) -> None:
    # given: a body the webhook stored (dedup = sha256 of the body's bytes)
    body = json.dumps(json.loads(sample("sleep")), separators=(",", ":")).encode()
    stored_id = raw_event_insert(
        body_text=body.decode(), dedup_key=dedup_key_for(body), classification=classify(json.loads(body)), request_id=""
    )
    assert stored_id is not None
    # when: the same bytes are imported as an NDJSON line, and again inside an array
    job = import_job(user_a, body + b"\n", "ndjson")
    in_array = import_job(user_a, b"[ " + body + b" ]", "json")
    run_job(job.pk)
    run_job(in_array.pk)
    # then: both are duplicates of the webhook's row
    for each in (job, in_array):
        each.refresh_from_db()
        assert (each.accepted, each.duplicates) == (0, 1)
    assert RawEvent.objects.filter(source=RawEventSource.IMPORT).count() == 0


def test_entries_that_are_not_importable_are_rejected_with_their_reason(
    user_a: User, user_b: User, upload_dir: Path, published: Published
) -> None:
    LabUpload.objects.create(user=user_a, terra_upload_id="upl_mine")
    LabUpload.objects.create(user=user_b, terra_upload_id="upl_theirs")
    lab_mine = {"upload_id": "upl_mine", "data": []}
    lab_theirs = {"upload_id": "upl_theirs", "data": []}
    entries = [
        {"type": "healthcheck"},  # a Terra payload the worker skips: accepted
        lab_mine,  # a lab report for one's own upload: accepted
        lab_theirs,
        {"type": "lab_report.completed", "upload_id": "upl_unknown", "data": []},
        {"type": "auth", "status": "success", "user": {"user_id": "t-x", "reference_id": USER_B}},
        {"type": "user_reauth", "new_user": {"user_id": "t-y"}},
        {"type": "permission_change", "user": {"user_id": "t-z"}},
        {"type": "s3_payload", "url": "https://example.com/x"},
        {"type": 7},
        None,
        {"type": "daily", "data": []},  # accepted
    ]
    job = import_job(user_a, json.dumps(entries).encode())
    run_job(job.pk)
    job.refresh_from_db()
    assert (job.total, job.accepted, job.duplicates, job.rejected) == (11, 3, 0, 8)
    errors = {e["index"]: e["error"] for e in job.errors}
    assert sorted(errors) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert "not one of your lab uploads" in errors[2]
    assert "not one of your lab uploads" in errors[3]
    assert errors[4].startswith("`auth` is a connection event")
    assert errors[5].startswith("`user_reauth` is a connection event")
    assert errors[7].startswith("`s3_payload` cannot be imported")
    assert errors[8].startswith("not a Terra payload")
    assert errors[9] == "not a JSON object"
    assert sorted(RawEvent.objects.filter(import_id=job.pk).values_list("event_type", flat=True)) == [
        "daily",
        "healthcheck",
        "lab_report",
    ]
    assert not TerraConnection.objects.exists()


def test_only_the_first_twenty_errors_are_kept(user_a: User, upload_dir: Path, published: Published) -> None:
    job = import_job(user_a, json.dumps(list(range(45))).encode())
    run_job(job.pk, batch_size=7)
    job.refresh_from_db()
    assert (job.total, job.rejected) == (45, 45)
    assert [e["index"] for e in job.errors] == list(range(20))


@pytest.mark.parametrize(
    ("content", "fmt", "error"),
    [
        (b"[not json at all", "json", "not JSON at byte 1"),
        (b"[]]", "json", "not JSON: more data after the array"),
        (b'{\n  "type": "daily"\n}\n', "ndjson", "not JSON: the first line is not one JSON payload"),
        (b"[\xff\xfe]", "json", "not UTF-8"),
    ],
)
def test_a_file_that_is_not_json_fails_the_job_with_a_dlq_copy(
    user_a: User, upload_dir: Path, published: Published, commits: Commits, content: bytes, fmt: str, error: str
) -> None:
    job = import_job(user_a, content, fmt)
    assert commits(run_job, job.pk).status == ImportRunStatus.FAILED
    job.refresh_from_db()
    assert job.status == ImportJobStatus.FAILED
    assert job.error.startswith(error)
    assert job.finished_at is not None
    assert [m["import_job_id"] for m in published.dead_letters] == [job.pk]
    assert published.dead_letters[0]["status"] == "failed"
    assert published.dead_letters[0]["error"] == job.error


def test_an_array_that_breaks_off_keeps_the_entries_before_the_break(
    user_a: User, upload_dir: Path, published: Published
) -> None:
    good = [json.dumps(daily_body("t-break", date(2026, 1, 1) + timedelta(days=i), i)) for i in range(5)]
    job = import_job(user_a, ("[" + ",".join(good) + ', {"type": "daily", oops}]').encode())
    assert run_job(job.pk, batch_size=2).status == ImportRunStatus.FAILED
    job.refresh_from_db()
    assert (job.status, job.total, job.accepted) == (ImportJobStatus.FAILED, 5, 5)
    assert job.error.startswith("not JSON at byte")
    assert RawEvent.objects.filter(import_id=job.pk).count() == 5


def test_a_missing_stored_file_fails_the_job(user_a: User, upload_dir: Path, published: Published) -> None:
    job = import_job(user_a, b"[]")
    storages["uploads"].delete(job.storage_key)
    assert run_job(job.pk).status == ImportRunStatus.FAILED
    job.refresh_from_db()
    assert job.error == "the stored file is missing"


def test_a_failure_mid_import_resumes_from_the_checkpoint_with_exact_counters(
    user_a: User, upload_dir: Path, published: Published, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a database failure in the middle of the third batch
    generated = generate(1_000, "resume")
    job = import_job(user_a, generated.as_array())
    real_insert = services.raw_event_insert
    calls = {"n": 0}

    def failing_insert(**kwargs: Any) -> int | None:
        calls["n"] += 1
        if calls["n"] == 250:
            from django.db import OperationalError

            raise OperationalError("connection lost (test)")
        return real_insert(**kwargs)

    monkeypatch.setattr(services, "raw_event_insert", failing_insert)
    first = run_job(job.pk, batch_size=100)
    # then: a retry is asked for, and only the committed batches count
    assert first.status == ImportRunStatus.RETRY
    assert first.retry_in is not None
    job.refresh_from_db()
    assert (job.status, job.position, job.total) == (ImportJobStatus.PROCESSING, 200, 200)
    assert job.byte_offset > 0
    assert RawEvent.objects.filter(import_id=job.pk).count() == job.accepted
    # when: the retry runs
    second = run_job(job.pk, batch_size=100, retries=1)
    # then: it went on from entry 200, and the counters are exact
    assert second.status == ImportRunStatus.COMPLETED
    job.refresh_from_db()
    assert (job.total, job.accepted, job.duplicates, job.rejected) == (
        1_000,
        generated.accepted,
        generated.duplicates,
        generated.rejected,
    )
    assert job.attempts == 2
    assert RawEvent.objects.filter(import_id=job.pk).count() == generated.accepted


def test_retries_exhausted_fail_the_job_with_a_dlq_copy(
    user_a: User, upload_dir: Path, published: Published, monkeypatch: pytest.MonkeyPatch, commits: Commits
) -> None:
    job = import_job(user_a, b'[{"type": "daily", "data": []}]')

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("storage unreachable (test)")

    monkeypatch.setattr(services, "open_stored", broken)
    assert run_job(job.pk, retries=0).status == ImportRunStatus.RETRY
    assert commits(run_job, job.pk, retries=5).status == ImportRunStatus.FAILED
    job.refresh_from_db()
    assert job.status == ImportJobStatus.FAILED
    assert job.error.startswith("retries_exhausted: OSError")
    assert [m["import_job_id"] for m in published.dead_letters] == [job.pk]


def test_a_job_delivered_too_often_without_progress_fails_max_deliveries(
    user_a: User, upload_dir: Path, published: Published, settings: Any, commits: Commits
) -> None:
    # given: a job whose deliveries died (a poison file kills its worker) as often as allowed
    job = import_job(user_a, b'[{"type": "daily", "data": []}]')
    ImportJob.objects.filter(pk=job.pk).update(status="processing", attempts=settings.AMY_MAX_DELIVERIES)
    # when: it is delivered once more
    result = commits(run_job, job.pk)
    # then: it fails, with its copy on the DLQ, and nothing of it is imported
    assert result.status == ImportRunStatus.FAILED
    job.refresh_from_db()
    assert (job.status, job.error, job.attempts) == ("failed", "max_deliveries", settings.AMY_MAX_DELIVERIES + 1)
    assert not RawEvent.objects.filter(import_id=job.pk).exists()
    assert published.dead_letters[0]["import_job_id"] == job.pk
    assert published.dead_letters[0]["error"] == "max_deliveries"
    # and a later delivery leaves it alone
    assert run_job(job.pk).status == ImportRunStatus.NOT_CLAIMED


def test_deliveries_are_bounded_since_the_last_checkpoint_not_in_total(
    user_a: User, upload_dir: Path, published: Published, settings: Any
) -> None:
    job = import_job(user_a, b'[{"type": "daily", "data": []}]')
    ImportJob.objects.filter(pk=job.pk).update(
        status="processing", attempts=settings.AMY_MAX_DELIVERIES + 3, checkpoint_attempt=5
    )
    assert run_job(job.pk).status == ImportRunStatus.COMPLETED


def test_a_long_import_goes_on_in_slices_each_a_continuation(
    user_a: User, upload_dir: Path, published: Published
) -> None:
    generated = generate(500, "slices")
    job = import_job(user_a, generated.as_array())
    results = []
    for _ in range(20):
        results.append(run_job(job.pk, batch_size=100, slice_seconds=1e-9).status)
        if results[-1] != ImportRunStatus.CONTINUED:
            break
    assert results == [ImportRunStatus.CONTINUED] * 4 + [ImportRunStatus.COMPLETED]
    assert [job_id for job_id, _ in published.jobs] == [job.pk] * 4
    job.refresh_from_db()
    assert (job.total, job.accepted, job.duplicates, job.rejected) == (
        500,
        generated.accepted,
        generated.duplicates,
        generated.rejected,
    )


def test_a_finished_job_is_not_run_again(user_a: User, upload_dir: Path, published: Published) -> None:
    job = import_job(user_a, b'[{"type": "daily", "data": []}]')
    assert run_job(job.pk).status == ImportRunStatus.COMPLETED
    assert run_job(job.pk).status == ImportRunStatus.NOT_CLAIMED
    assert run_job(10**12).status == ImportRunStatus.NOT_CLAIMED
    job.refresh_from_db()
    assert (job.attempts, job.accepted) == (1, 1)


def test_a_delivery_of_a_job_held_by_another_is_dropped(
    user_a: User, upload_dir: Path, published: Published, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = import_job(user_a, b"[]")
    monkeypatch.setattr(services, "_LOCK_WAIT_SECONDS", 0.3)
    url = database_url_for_tests().replace("postgres://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [f"import_job:{job.pk}"])
        assert run_job(job.pk).status == ImportRunStatus.BUSY
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("pending", 0)
    assert run_job(job.pk).status == ImportRunStatus.COMPLETED


def test_idle_unfinished_jobs_are_requeued(user_a: User, upload_dir: Path, published: Published) -> None:
    idle = import_job(user_a, b"[]")
    fresh = import_job(user_a, b"[]")
    done = import_job(user_a, b"[]")
    run_job(done.pk)
    from django.db.models.functions import Now

    ImportJob.objects.filter(pk__in=[idle.pk, done.pk]).update(updated_at=Now() - timedelta(hours=1))
    published.jobs.clear()
    assert import_jobs_requeue(idle_seconds=600) == [idle.pk]
    assert published.jobs == [(idle.pk, None)]
    assert fresh.pk not in import_jobs_requeue(idle_seconds=600)


# On S3 ---------------------------------------------------------------------------------------------


def test_an_import_through_s3_is_stored_there_and_read_back_in_ranges(
    client_a: APIClient, s3_server: str, s3_storage: str, published: Published
) -> None:
    import boto3

    generated = generate(400, "s3")
    response = post_file(client_a, generated.as_array())
    assert response.status_code == 202
    job = ImportJob.objects.get(pk=response.json()["id"])
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    head = client.head_object(Bucket=s3_storage, Key=job.storage_key)
    assert head["ContentLength"] == len(generated.as_array())
    # every slice after the first resumes with a range request at its checkpoint
    statuses = []
    while not statuses or statuses[-1] == ImportRunStatus.CONTINUED:
        statuses.append(run_job(job.pk, batch_size=100, slice_seconds=1e-9).status)
    assert statuses[-1] == ImportRunStatus.COMPLETED
    assert len(statuses) == 4
    job.refresh_from_db()
    assert (job.total, job.accepted, job.duplicates, job.rejected) == (
        400,
        generated.accepted,
        generated.duplicates,
        generated.rejected,
    )


# The stored file once the job has ended ------------------------------------------------------------


def test_a_completed_jobs_file_is_deleted_and_its_counters_kept(
    user_a: User, upload_dir: Path, published: Published, commits: Commits
) -> None:
    generated = generate(20, "file-deleted")
    job = import_job(user_a, generated.as_array())
    key = job.storage_key
    assert storages["uploads"].exists(key)

    assert commits(run_job, job.pk).status == ImportRunStatus.COMPLETED

    job.refresh_from_db()
    assert not storages["uploads"].exists(key)
    assert job.storage_key == ""
    assert (job.status, job.total, job.accepted) == (ImportJobStatus.COMPLETED, 20, generated.accepted)


def test_a_failed_jobs_file_is_deleted_too(
    user_a: User, upload_dir: Path, published: Published, commits: Commits
) -> None:
    job = import_job(user_a, b"[1, 2, oops")
    key = job.storage_key

    assert commits(run_job, job.pk).status == ImportRunStatus.FAILED

    job.refresh_from_db()
    assert (job.status, job.storage_key) == (ImportJobStatus.FAILED, "")
    assert not storages["uploads"].exists(key)


def test_a_file_the_store_would_not_delete_is_deleted_by_the_drain_later(
    user_a: User, upload_dir: Path, published: Published, commits: Commits, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = import_job(user_a, b"[]")
    key = job.storage_key
    storage_class = type(storages["uploads"])

    def refuse(self: Any, name: str) -> None:
        raise OSError("the store is down")

    with monkeypatch.context() as patched:
        patched.setattr(storage_class, "delete", refuse)
        assert commits(run_job, job.pk).status == ImportRunStatus.COMPLETED
    job.refresh_from_db()
    assert job.storage_key == key  # kept, so it is found again

    assert services.import_files_delete_ended() == 1
    job.refresh_from_db()
    assert job.storage_key == ""
    assert not storages["uploads"].exists(key)


# The daily quota ----------------------------------------------------------------------------------


def test_imports_past_the_daily_quota_are_429_until_midnight_utc_and_replays_do_not_count(
    user_a: User, user_b: User, upload_dir: Path, published: Published, settings: Any
) -> None:
    settings.AMY_IMPORTS_PER_DAY = 1
    client = APIClient()
    key = f"import-{uuid.uuid4()}"
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {cli_token_issue(user=user_a).token}")
    body = json.dumps([daily_body("t-quota", date(2026, 2, 2), 5)]).encode()
    first = client.generic("POST", "/v1/import", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY=key)
    replay = client.generic("POST", "/v1/import", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY=key)
    assert (first.status_code, replay.status_code, replay["Idempotent-Replayed"]) == (202, 202, "true")

    refused = post_body(client, body)

    assert refused.status_code == 429
    assert error_code(refused) == "rate_limit_exceeded"
    details = refused.json()["error"]["details"]
    assert (details["quota"], details["limit"], details["used"]) == ("imports_per_day", 1, 1)
    tomorrow = timezone.now().date() + timedelta(days=1)
    midnight = timezone.datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC)
    assert abs(int(refused["Retry-After"]) - (midnight - timezone.now()).total_seconds()) <= 5
    assert details["resets_at"] == midnight.isoformat()
    assert ImportJob.objects.filter(user=user_a).count() == 1
    assert post_body(client_for(user_b), body).status_code == 202  # another user's quota is their own
