"""Lab uploads (`/v1/labs`): accepted by content within the size cap, stored
under our own key on a real S3 server (or local disk), submitted to a fake Terra over loopback, and
read back, downloaded and deleted by their owner only."""

from __future__ import annotations

import email.parser
import hashlib
import io
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from PIL import Image

from accounts.models import User
from accounts.tokens import cli_token_issue
from ingest import publish
from ingest.labs import services
from ingest.labs.services import (
    LabStorageUnavailable,
    SubmitOutcome,
    lab_upload_create,
    lab_upload_submit,
    lab_uploads_resubmit_stale,
    storage_key_for,
)
from ingest.labs.sniff import HEIC, JPEG, PDF, PNG, sniff
from ingest.labs.upload import LabFile, display_filename, download_filename
from ingest.models import Biomarker, LabUpload, LabUploadStatus, RawEvent, RawEventState
from ingest.tasks import lab_upload_submit_task
from ingest.terra_client import TerraUnavailable
from tests.conftest import S3_BUCKET
from tests.fake_terra import FakeTerra
from tests.ingest import lab_files
from tests.ledger import process, store
from tests.terra import sample

pytestmark = [pytest.mark.django_db, pytest.mark.urls("ingest.labs.urls")]

USER_A = "user_labs_a"
USER_B = "user_labs_b"
KEY_PATTERN = r"labs/{user}/{id}/[0-9a-f]{{32}}\.{ext}"


# Fixtures and helpers -----------------------------------------------------------------------------


@pytest.fixture
def user() -> User:
    return User.objects.create(id=USER_A, email="a@example.com")


@pytest.fixture
def other() -> User:
    return User.objects.create(id=USER_B, email="b@example.com")


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What would be published to the broker: recorded, not sent (other runs share the test Redis)."""
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(
        publish.celery_app,
        "send_task",
        lambda name, **options: sent.append({"name": name, "kwargs": options["kwargs"], "queue": options["queue"]}),
    )
    return sent


@pytest.fixture
def s3(s3_storage: str, s3_server: str) -> Iterator[Any]:
    """A boto3 client on the S3 server whose bucket the `uploads` storage now uses."""
    client = boto3.client(
        "s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    yield client
    client.close()


def bucket_keys(s3: Any) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=S3_BUCKET).get("Contents", [])]


@pytest.fixture
def local_storage(settings: Any, tmp_path: Path) -> Path:
    """The `uploads` storage on local disk under a fresh directory."""
    root = tmp_path / "files"
    settings.AMY_FILES_ROOT = str(root)
    settings.STORAGES = {
        **settings.STORAGES,
        "uploads": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}},
    }
    return root


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def s3_down(settings: Any) -> None:
    """The `uploads` storage pointed at a port nobody listens on (one try, no retries)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "uploads": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": S3_BUCKET,
                "endpoint_url": "http://127.0.0.1:1",
                "region_name": "us-east-1",
                "access_key": "test",
                "secret_key": "test",
                "addressing_style": "path",
                "file_overwrite": False,
                "client_config": Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1),
            },
        },
    }


@pytest.fixture
def terra(fake_terra: FakeTerra, settings: Any) -> Iterator[FakeTerra]:
    settings.TERRA_API_BASE_URL = fake_terra.url
    settings.TERRA_API_CONFIGURED = True
    settings.TERRA_DEV_ID = "test-dev-id"
    settings.TERRA_API_KEY = "test-api-key"
    fake_terra.reset()
    yield fake_terra
    fake_terra.reset()


@pytest.fixture
def run_eagerly() -> Iterator[None]:
    """Tasks run with `.apply()` (retries included, countdowns not waited for) inside the test's
    transaction: the worker's after-task hook would close that connection, so it is off meanwhile."""
    from celery.signals import task_postrun

    from amy.celery import close_unusable_db_connections

    task_postrun.disconnect(close_unusable_db_connections)
    yield
    task_postrun.connect(close_unusable_db_connections)


class Api:
    def __init__(self, user: User) -> None:
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {cli_token_issue(user=user).token}"}

    def upload(
        self,
        content: bytes,
        name: str = "bloods.pdf",
        content_type: str = "application/octet-stream",
        path: str = "/v1/labs",
        field: str = "file",
    ) -> Any:
        file = SimpleUploadedFile(name, content, content_type=content_type)
        return self.client.post(path, {field: file}, headers=self.headers)

    def post_raw(self, body: bytes, content_type: str, **extra: str) -> Any:
        return self.client.generic("POST", "/v1/labs", body, content_type=content_type, headers=self.headers, **extra)

    def list(self, **params: str) -> Any:
        return self.client.get("/v1/labs", params, headers=self.headers)

    def get(self, lab_id: int) -> Any:
        return self.client.get(f"/v1/labs/{lab_id}", headers=self.headers)

    def file(self, lab_id: int) -> Any:
        return self.client.get(f"/v1/labs/{lab_id}/file", headers=self.headers)

    def delete(self, lab_id: int) -> Any:
        return self.client.delete(f"/v1/labs/{lab_id}", headers=self.headers)


@pytest.fixture
def api(user: User) -> Api:
    return Api(user)


@pytest.fixture
def api_b(other: User) -> Api:
    return Api(other)


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()["error"]
    assert body["request_id"] == response["x-amy-request-id"]
    return {key: value for key, value in body.items() if key in {"code", "details"}}


def assert_nothing_stored(s3: Any) -> None:
    assert LabUpload.objects.count() == 0
    assert bucket_keys(s3) == []


def lab_report_requests(terra: FakeTerra) -> list[Any]:
    return terra.requests_to("/v2/lab-reports", "POST")


def multipart_file(request: Any) -> tuple[str | None, str, bytes]:
    """(filename, content type, bytes) of the `file` part of a recorded multipart request."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser().parsebytes(head + request.body)
    (part,) = [p for p in message.get_payload() if p.get_param("name", header="content-disposition") == "file"]
    return part.get_filename(), part.get_content_type(), part.get_payload(decode=True)


def uploaded(api: Api, content: bytes, **kwargs: Any) -> LabUpload:
    response = api.upload(content, **kwargs)
    assert response.status_code == 202, response.content
    return LabUpload.objects.get(pk=response.json()["id"])


# Sniffing: by the first bytes only ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (lab_files.pdf(), PDF),
        (lab_files.jpeg(), JPEG),
        (lab_files.png(), PNG),
        (lab_files.heic(), HEIC),
        *[
            (b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00", HEIC)
            for brand in (b"heix", b"hevc", b"heim", b"heis", b"mif1")
        ],
        (lab_files.ELF, None),
        (lab_files.HTML, None),
        (lab_files.SVG, None),
        (lab_files.GIF, None),
        (lab_files.PDF_AFTER_HTML, None),
        (lab_files.AVIF, None),
        (b"\x00\x00\x00\x08ftypheic", None),  # a box too short to be an ftyp box
        (b"%PDF", None),
        (b"", None),
    ],
)
def test_a_file_is_sniffed_by_its_magic_bytes(content: bytes, kind: Any) -> None:
    assert sniff(content[:16]) == kind


# Upload: accepted ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "kind"),
    [(lab_files.pdf, PDF), (lab_files.jpeg, JPEG), (lab_files.png, PNG), (lab_files.heic, HEIC)],
    ids=["pdf", "jpeg", "png", "heic"],
)
def test_each_accepted_type_is_stored_under_a_server_key_with_its_sniffed_type(
    api: Api, s3: Any, queued: list[dict[str, Any]], django_capture_on_commit_callbacks, make: Any, kind: Any
) -> None:
    # given: a name and a Content-Type that say nothing true about the content
    content = make()
    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = api.upload(content, name="scan from phone.bin", content_type="text/plain")
    # then
    assert response.status_code == 202
    lab_id = response.json()["id"]
    assert response.json() == {"id": lab_id, "status": "processing"}
    lab_upload = LabUpload.objects.get(pk=lab_id)
    assert (lab_upload.user_id, lab_upload.filename, lab_upload.content_type, lab_upload.status) == (
        USER_A,
        "scan from phone.bin",
        kind.content_type,
        LabUploadStatus.PROCESSING,
    )
    assert (lab_upload.size_bytes, lab_upload.sha256) == (len(content), hashlib.sha256(content).hexdigest())
    assert (lab_upload.terra_upload_id, lab_upload.submitted_at, lab_upload.error) == (None, None, None)
    assert re.fullmatch(KEY_PATTERN.format(user=USER_A, id=lab_id, ext=kind.extension), lab_upload.storage_key)
    assert bucket_keys(s3) == [lab_upload.storage_key]
    stored = s3.get_object(Bucket=S3_BUCKET, Key=lab_upload.storage_key)
    assert stored["Body"].read() == content
    assert stored["ContentType"] == kind.content_type
    assert stored["ServerSideEncryption"] == "AES256"
    # and the submission is queued once the row is committed
    assert queued == [
        {
            "name": "ingest.lab_upload_submit",
            "kwargs": {"lab_upload_id": lab_id, "request_id": response["x-amy-request-id"]},
            "queue": "amy",
        }
    ]


def test_the_upload_alias_accepts_the_same_upload(api: Api, s3: Any) -> None:
    response = api.upload(lab_files.png(), name="photo.png", path="/v1/labs/upload")
    assert response.status_code == 202
    assert LabUpload.objects.get(pk=response.json()["id"]).content_type == "image/png"


def test_a_file_of_exactly_10_mb_is_accepted(api: Api, s3: Any) -> None:
    content = lab_files.padded_pdf(lab_files.MAX_BYTES)
    lab_upload = uploaded(api, content)
    assert lab_upload.size_bytes == 10_485_760
    assert s3.get_object(Bucket=S3_BUCKET, Key=lab_upload.storage_key)["ContentLength"] == 10_485_760


def test_only_the_first_file_part_named_file_is_taken(api: Api, s3: Any) -> None:
    first = SimpleUploadedFile("a.pdf", lab_files.pdf())
    second = SimpleUploadedFile("b.png", lab_files.png())
    other_field = SimpleUploadedFile("c.png", lab_files.png())
    response = api.client.post("/v1/labs", {"file": [first, second], "extra": other_field}, headers=api.headers)
    assert response.status_code == 202
    lab_upload = LabUpload.objects.get()
    assert (lab_upload.filename, lab_upload.content_type) == ("a.pdf", "application/pdf")
    assert bucket_keys(s3) == [lab_upload.storage_key]


def test_a_retried_upload_with_the_same_idempotency_key_is_stored_once(api: Api, s3: Any) -> None:
    key = f"lab-{uuid.uuid4()}"
    file = lab_files.pdf()
    first = api.client.post(
        "/v1/labs", {"file": SimpleUploadedFile("a.pdf", file)}, headers={**api.headers, "Idempotency-Key": key}
    )
    again = api.client.post(
        "/v1/labs", {"file": SimpleUploadedFile("a.pdf", file)}, headers={**api.headers, "Idempotency-Key": key}
    )
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert LabUpload.objects.count() == 1
    assert len(bucket_keys(s3)) == 1


def test_the_display_name_is_one_printable_line_of_at_most_255_characters() -> None:
    assert display_filename("  blood\u202etxt.pdf  ") == "bloodtxt.pdf"
    assert display_filename("two\tspaced   words.pdf") == "two spaced words.pdf"
    long = display_filename("x" * 300 + ".pdf")
    assert (len(long), long[-4:]) == (255, ".pdf")
    assert display_filename(None) == ""


def test_the_download_name_carries_the_extension_of_the_sniffed_type() -> None:
    assert download_filename("bloods.pdf", "pdf", "lab-report-1") == "bloods.pdf"
    assert download_filename("evil.html", "pdf", "lab-report-1") == "evil.pdf"
    assert download_filename("IMG_0001.HEIC", "heic", "lab-report-1") == "IMG_0001.heic"
    assert download_filename("", "png", "lab-report-7") == "lab-report-7.png"
    assert download_filename("...", "png", "lab-report-7") == "lab-report-7.png"


def test_a_storage_key_never_holds_a_separator_from_the_user_id() -> None:
    key = storage_key_for(user_id="../../etc", lab_upload_id=5, kind=PDF)
    assert re.fullmatch(r"labs/[0-9a-f]{64}/5/[0-9a-f]{32}\.pdf", key)


# Upload: refused, and nothing stored --------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "name", "content_type"),
    [
        (lab_files.ELF, "report.pdf", "application/pdf"),  # a renamed executable
        (lab_files.HTML, "report.html", "text/html"),
        (lab_files.SVG, "scan.png", "image/png"),
        (lab_files.GIF, "scan.gif", "image/gif"),
        (lab_files.PDF_AFTER_HTML, "report.pdf", "application/pdf"),
        (lab_files.AVIF, "photo.heic", "image/heic"),
        (b"", "empty.pdf", "application/pdf"),
    ],
    ids=["elf-named-pdf", "html", "svg-named-png", "gif", "pdf-not-at-start", "avif", "empty"],
)
def test_a_file_that_is_not_an_accepted_type_by_content_is_refused(
    api: Api, s3: Any, queued: list[dict[str, Any]], content: bytes, name: str, content_type: str
) -> None:
    response = api.upload(content, name=name, content_type=content_type)
    assert response.status_code == 400
    assert error_of(response) == {"code": "invalid_file_type", "details": {"field": "file"}}
    assert_nothing_stored(s3)
    assert queued == []


def test_one_byte_over_10_mb_is_413_and_nothing_is_stored(api: Api, s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # given: a record of the most bytes the handler ever held
    from ingest.labs import upload

    held: list[int] = []
    original = upload.LabFileUploadHandler.receive_data_chunk

    def receive(self: Any, raw_data: bytes, start: int) -> None:
        try:
            original(self, raw_data, start)
        finally:
            held.append(-1 if self.spool.closed else self.spool.tell())

    monkeypatch.setattr(upload.LabFileUploadHandler, "receive_data_chunk", receive)
    # when
    response = api.upload(lab_files.padded_pdf(lab_files.MAX_BYTES + 1))
    # then
    assert response.status_code == 413
    assert error_of(response) == {"code": "payload_too_large"}
    assert_nothing_stored(s3)
    assert 0 < max(held) <= lab_files.MAX_BYTES


def test_a_body_declared_too_large_is_413_before_it_is_read(api: Api, s3: Any) -> None:
    body = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n%PDF-1.4\r\n--x--\r\n'
    response = api.post_raw(body, "multipart/form-data; boundary=x", CONTENT_LENGTH=str(20 * 1024 * 1024))
    assert response.status_code == 413
    assert error_of(response) == {"code": "payload_too_large"}
    assert_nothing_stored(s3)


def test_a_part_declaring_its_own_length_over_the_cap_is_413(api: Api, s3: Any) -> None:
    body = (
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n'
        b"Content-Length: 20000000\r\n\r\n%PDF-1.4\r\n--x--\r\n"
    )
    response = api.post_raw(body, "multipart/form-data; boundary=x")
    assert response.status_code == 413
    assert_nothing_stored(s3)


@pytest.mark.parametrize(
    "send",
    [
        lambda api: api.upload(lab_files.pdf(), field="document"),
        lambda api: api.client.post("/v1/labs", {"file": "%PDF-1.4 as a text field"}, headers=api.headers),
        lambda api: api.post_raw(b"--x--\r\n", "multipart/form-data; boundary=x"),
    ],
    ids=["other-field", "text-field", "no-parts"],
)
def test_a_multipart_body_without_a_file_part_named_file_is_invalid_field(api: Api, s3: Any, send: Any) -> None:
    response = send(api)
    assert response.status_code == 400
    assert error_of(response) == {"code": "invalid_field", "details": {"field": "file"}}
    assert_nothing_stored(s3)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (json.dumps({"file": "JVBERi0xLjQ="}).encode(), "application/json"),
        (lab_files.pdf(), "application/pdf"),
        (b"file=%25PDF-1.4", "application/x-www-form-urlencoded"),
        (b"", ""),
        (b"--x\r\nnot a part", "multipart/form-data"),  # no boundary parameter
    ],
    ids=["json", "raw-pdf", "urlencoded", "no-body", "multipart-without-boundary"],
)
def test_a_body_that_is_not_multipart_is_invalid_request(api: Api, s3: Any, body: bytes, content_type: str) -> None:
    response = api.post_raw(body, content_type)
    assert response.status_code == 400
    assert error_of(response) == {"code": "invalid_request"}
    assert_nothing_stored(s3)


def test_an_upload_without_a_token_is_401_and_nothing_is_stored(s3: Any) -> None:
    response = Client().post("/v1/labs", {"file": SimpleUploadedFile("a.pdf", lab_files.pdf())})
    assert response.status_code == 401
    assert error_of(response) == {"code": "missing_authorization"}
    assert_nothing_stored(s3)


def test_when_the_store_is_down_the_upload_is_503_and_no_row_is_left(
    api: Api, s3_down: None, queued: list[dict[str, Any]], django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = api.upload(lab_files.pdf())
    assert response.status_code == 503
    assert error_of(response) == {"code": "upstream_unavailable"}
    assert LabUpload.objects.count() == 0
    assert queued == []


def test_a_transaction_that_fails_after_the_file_is_stored_deletes_the_file(
    user: User, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: the step after storing fails
    def fail(lab_upload_id: int, request_id: str | None) -> Any:
        raise RuntimeError("after the store")

    monkeypatch.setattr(services, "submit_later", fail)
    content = lab_files.pdf()
    file = LabFile(
        io.BytesIO(content),
        name="a.pdf",
        content_type="application/pdf",
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        head=content[:16],
    )
    # when
    with pytest.raises(RuntimeError):
        lab_upload_create(user=user, file=file, kind=PDF, filename="a.pdf")
    # then
    assert_nothing_stored(s3)


# Download -----------------------------------------------------------------------------------------


def test_the_file_round_trips_through_s3_by_a_pre_signed_redirect(api: Api, s3: Any) -> None:
    # given
    content = lab_files.jpeg()
    lab_upload = uploaded(api, content, name="Blood test \u2013 M\u00e4rz.jpeg", content_type="application/pdf")
    # when
    response = api.file(lab_upload.pk)
    # then: a redirect to the object, signed and short-lived, never the bytes from our origin
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(f"{s3.meta.endpoint_url}/{S3_BUCKET}/{lab_upload.storage_key}?")
    assert "Expires=" in location or "X-Amz-Expires=300" in location
    assert response["Cache-Control"] == "private, no-store"
    download = httpx.get(location)
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["content-type"] == "image/jpeg"
    assert (
        download.headers["content-disposition"]
        == "attachment; filename*=utf-8''Blood%20test%20%E2%80%93%20M%C3%A4rz.jpg"
    )


def test_the_file_round_trips_through_local_disk_as_a_streamed_attachment(api: Api, local_storage: Path) -> None:
    # given: a PDF the client called a web page
    content = lab_files.pdf()
    lab_upload = uploaded(api, content, name='evil".html', content_type="text/html")
    assert stored_files(local_storage) == [local_storage / lab_upload.storage_key]
    # when
    response = api.file(lab_upload.pk)
    # then
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == content
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="evil\\".pdf"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cache-Control"] == "private, no-store"


def test_the_download_ignores_the_accept_header(api: Api, local_storage: Path) -> None:
    lab_upload = uploaded(api, lab_files.png())
    response = api.client.get(f"/v1/labs/{lab_upload.pk}/file", headers={**api.headers, "Accept": "image/png"})
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"


def test_a_missing_stored_file_is_lab_not_found(api: Api, local_storage: Path) -> None:
    lab_upload = uploaded(api, lab_files.png())
    (local_storage / lab_upload.storage_key).unlink()
    response = api.file(lab_upload.pk)
    assert response.status_code == 404
    assert error_of(response) == {"code": "lab_not_found"}


# List and detail ----------------------------------------------------------------------------------


def test_the_list_is_paginated_newest_first(api: Api, s3: Any) -> None:
    # given: three uploads
    ids = [uploaded(api, lab_files.pdf(), name=f"r{n}.pdf").pk for n in range(3)]
    # when
    first = api.list(limit="2")
    second = api.list(limit="2", cursor=first.json()["next_cursor"])
    # then
    assert first.status_code == 200
    assert [row["id"] for row in first.json()["data"]] == [ids[2], ids[1]]
    assert [row["id"] for row in second.json()["data"]] == [ids[0]]
    assert second.json()["next_cursor"] is None
    row = first.json()["data"][0]
    lab_upload = LabUpload.objects.get(pk=ids[2])
    assert row == {
        "id": ids[2],
        "filename": "r2.pdf",
        "content_type": "application/pdf",
        "size_bytes": lab_upload.size_bytes,
        "status": "processing",
        "error": None,
        "created_at": lab_upload.created_at.isoformat().replace("+00:00", "Z"),
        "parsed_at": None,
    }
    assert api.list().json() == {"data": [*first.json()["data"], *second.json()["data"]], "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"cursor": "bad!"}, "cursor"),
        ({"cursor": "eyJiZWZvcmUiOi0xfQ"}, "cursor"),
    ],
)
def test_a_bad_limit_or_cursor_is_invalid_field(api: Api, params: dict[str, str], field: str) -> None:
    response = api.list(**params)
    assert response.status_code == 400
    assert error_of(response) == {"code": "invalid_field", "details": {"field": field}}


def test_a_user_never_sees_another_users_lab(api: Api, api_b: Api, s3: Any) -> None:
    # given: A's upload
    lab_upload = uploaded(api, lab_files.pdf())
    unknown = lab_upload.pk + 1000
    # then: for B it is exactly as absent as an unknown id
    assert api_b.list().json() == {"data": [], "next_cursor": None}
    for call in (api_b.get, api_b.file, api_b.delete):
        theirs, absent = call(lab_upload.pk), call(unknown)
        assert (theirs.status_code, absent.status_code) == (404, 404)
        assert error_of(theirs) == error_of(absent) == {"code": "lab_not_found"}
        assert theirs.json()["error"]["message"] == absent.json()["error"]["message"]
    # and A's upload and file are untouched
    assert LabUpload.objects.filter(pk=lab_upload.pk).exists()
    assert bucket_keys(s3) == [lab_upload.storage_key]
    assert [row["id"] for row in api.list().json()["data"]] == [lab_upload.pk]


def test_an_unknown_or_absurd_id_is_lab_not_found(api: Api) -> None:
    for lab_id in (0, 2**63, 10**30):
        for call in (api.get, api.file, api.delete):
            response = call(lab_id)
            assert response.status_code == 404
            assert error_of(response) == {"code": "lab_not_found"}


# Delete -------------------------------------------------------------------------------------------


def test_delete_removes_the_row_its_biomarkers_and_the_object(api: Api, s3: Any) -> None:
    # given: an upload with a biomarker, and another upload that stays
    lab_upload = uploaded(api, lab_files.pdf())
    kept = uploaded(api, lab_files.png())
    Biomarker.objects.create(user_id=USER_A, lab_upload=lab_upload, code="iron", value=17.0)
    # when
    response = api.delete(lab_upload.pk)
    # then
    assert response.status_code == 204
    assert list(LabUpload.objects.values_list("pk", flat=True)) == [kept.pk]
    assert Biomarker.objects.count() == 0
    assert bucket_keys(s3) == [kept.storage_key]
    assert error_of(api.delete(lab_upload.pk)) == {"code": "lab_not_found"}


def test_delete_redacts_the_reports_ledger_rows_and_skips_those_not_yet_processed(api: Api, s3: Any) -> None:
    # given: an upload Terra parsed (its report processed) and a second report still waiting
    lab_upload = uploaded(api, lab_files.pdf())
    LabUpload.objects.filter(pk=lab_upload.pk).update(terra_upload_id="upl_deleted")
    done = RawEvent.objects.create(
        event_type="lab_report", reference_id="upl_deleted", payload="{}", dedup_key="r1", state=RawEventState.PROCESSED
    )
    waiting = RawEvent.objects.create(
        event_type="lab_report", reference_id="upl_deleted", payload="{}", dedup_key="r2", state=RawEventState.PARKED
    )
    other_report = RawEvent.objects.create(
        event_type="lab_report", reference_id="upl_other", payload="{}", dedup_key="r3", state=RawEventState.PROCESSED
    )
    # when
    assert api.delete(lab_upload.pk).status_code == 204
    # then: tombstones without the report; the waiting one will not be worked on
    for row in (done, waiting, other_report):
        row.refresh_from_db()
    assert (done.payload, done.state) == (None, RawEventState.PROCESSED)
    assert (waiting.payload, waiting.state, waiting.process_error) == (
        None,
        RawEventState.SKIPPED,
        "skipped:lab_upload_deleted",
    )
    assert other_report.payload == "{}"


def test_delete_on_local_disk_removes_the_file(api: Api, local_storage: Path) -> None:
    lab_upload = uploaded(api, lab_files.pdf())
    assert api.delete(lab_upload.pk).status_code == 204
    assert stored_files(local_storage) == []


def test_delete_when_the_store_is_down_is_503_and_keeps_the_upload(
    api: Api, s3: Any, settings: Any, s3_down: None
) -> None:
    # given: an upload stored while S3 was up (made directly: the fixture has already pointed away)
    lab_upload = LabUpload.objects.create(
        user_id=USER_A, filename="a.pdf", content_type="application/pdf", storage_key="labs/x/1/a.pdf"
    )
    # when
    response = api.delete(lab_upload.pk)
    # then
    assert response.status_code == 503
    assert error_of(response) == {"code": "upstream_unavailable"}
    assert LabUpload.objects.filter(pk=lab_upload.pk).exists()


# Submission to Terra ------------------------------------------------------------------------------


def test_the_full_lab_path_upload_submit_webhook_biomarkers(api: Api, s3: Any, terra: FakeTerra) -> None:
    # given: an uploaded PDF
    content = lab_files.pdf()
    lab_upload = uploaded(api, content)
    # when: the task runs
    assert lab_upload_submit_task(lab_upload.pk) == "submitted"
    # then: Terra received the file as multipart, for our user, with our credentials
    (request,) = lab_report_requests(terra)
    assert request.query == {"reference_id": [USER_A]}
    assert (request.headers["dev-id"], request.headers["x-api-key"]) == ("test-dev-id", "test-api-key")
    assert multipart_file(request) == (f"lab-report-{lab_upload.pk}.pdf", "application/pdf", content)
    lab_upload.refresh_from_db()
    terra_upload_id = lab_upload.terra_upload_id
    assert terra_upload_id is not None
    assert terra_upload_id.startswith("upl_")
    assert lab_upload.submitted_at is not None
    assert lab_upload.status == LabUploadStatus.PROCESSING
    # when: Terra's lab report for that upload arrives and is processed
    report = json.loads(sample("lab_report"))
    report["upload_id"] = terra_upload_id
    raw_event = process(store(json.dumps(report).encode()))
    # then
    assert raw_event.state == RawEventState.PROCESSED
    detail = api.get(lab_upload.pk).json()
    assert (detail["status"], detail["error"]) == ("parsed", None)
    assert detail["parsed_at"] is not None
    assert [b["code"] for b in detail["biomarkers"]] == [
        "hemoglobin",
        "ldl_cholesterol",
        "c_reactive_protein_hs",
        "vitamin_d_25_hydroxy",
        "nitrite",
    ]
    assert detail["biomarkers"][0] == {
        "code": "hemoglobin",
        "name": "Hemoglobin",
        "value": 14.2,
        "value_text": "14.2",
        "unit": "g/dL",
        "reference_low": 13.0,
        "reference_high": 17.0,
        "flag": "normal",
        "collected_at": "2026-11-18T08:15:00Z",
    }
    assert set(detail) == {
        "id",
        "filename",
        "content_type",
        "size_bytes",
        "status",
        "error",
        "created_at",
        "parsed_at",
        "biomarkers",
    }


def test_a_report_that_came_before_the_submission_is_unparked_by_it(
    api: Api, s3: Any, terra: FakeTerra, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: Terra's next upload id, and its report already parked
    from ingest.services import connections

    monkeypatch.setattr(connections, "publish_raw_events", lambda ids, request_id: len(ids))
    lab_upload = uploaded(api, lab_files.pdf())
    report = json.loads(sample("lab_report"))
    report["upload_id"] = "upl_1"  # the fake's id for the first request after a reset
    parked = process(store(json.dumps(report).encode()))
    assert parked.state == RawEventState.PARKED
    # when
    assert lab_upload_submit_task(lab_upload.pk) == "submitted"
    # then
    parked.refresh_from_db()
    assert parked.state == RawEventState.RECEIVED
    assert process(parked).state == RawEventState.PROCESSED
    assert Biomarker.objects.filter(lab_upload=lab_upload).count() == 5


def test_heic_is_converted_to_jpeg_before_submission(api: Api, s3: Any, terra: FakeTerra) -> None:
    lab_upload = uploaded(api, lab_files.heic(), name="IMG_0001.HEIC")
    assert lab_upload_submit_task(lab_upload.pk) == "submitted"
    (request,) = lab_report_requests(terra)
    filename, content_type, content = multipart_file(request)
    assert (filename, content_type) == (f"lab-report-{lab_upload.pk}.jpg", "image/jpeg")
    assert sniff(content[:16]) == JPEG
    with Image.open(io.BytesIO(content)) as image:
        assert (image.format, image.size, image.mode) == ("JPEG", (32, 24), "RGB")
    # the stored original stays the HEIC
    lab_upload.refresh_from_db()
    assert lab_upload.content_type == "image/heic"


def test_a_submitted_upload_is_not_submitted_again(api: Api, s3: Any, terra: FakeTerra) -> None:
    lab_upload = uploaded(api, lab_files.png())
    assert lab_upload_submit_task(lab_upload.pk) == "submitted"
    assert lab_upload_submit_task(lab_upload.pk) == "already_submitted"
    assert len(lab_report_requests(terra)) == 1


def test_terra_5xx_is_retried_then_the_upload_is_submitted(api: Api, s3: Any, terra: FakeTerra) -> None:
    # given
    lab_upload = uploaded(api, lab_files.pdf())
    terra.path_status["/v2/lab-reports"] = 503
    # when: an attempt that is not the last
    with pytest.raises(TerraUnavailable):
        lab_upload_submit(lab_upload_id=lab_upload.pk, final_attempt=False)
    # then: still waiting, no reason recorded
    lab_upload.refresh_from_db()
    assert (lab_upload.status, lab_upload.error, lab_upload.terra_upload_id) == ("processing", None, None)
    # when: Terra recovers and the retry runs
    terra.path_status.clear()
    assert lab_upload_submit(lab_upload_id=lab_upload.pk, final_attempt=False) == SubmitOutcome.SUBMITTED
    lab_upload.refresh_from_db()
    assert lab_upload.terra_upload_id is not None
    assert len(lab_report_requests(terra)) == 2


def test_terra_5xx_on_every_attempt_fails_the_upload_after_five_retries(
    api: Api, s3: Any, terra: FakeTerra, run_eagerly: None
) -> None:
    # given
    lab_upload = uploaded(api, lab_files.pdf())
    terra.path_status["/v2/lab-reports"] = 502
    # when: the task runs with its retries (eagerly: the countdowns are not waited for)
    lab_upload_submit_task.apply(kwargs={"lab_upload_id": lab_upload.pk})
    # then: the first attempt and five retries, then failed with the reason
    assert len(lab_report_requests(terra)) == 6
    lab_upload.refresh_from_db()
    assert lab_upload.status == LabUploadStatus.FAILED
    assert lab_upload.error == (
        "Terra was unavailable; gave up after several attempts (Terra POST /lab-reports answered 502)."
    )


def test_terra_4xx_fails_the_upload_at_once_with_the_reason(
    api: Api, s3: Any, terra: FakeTerra, run_eagerly: None
) -> None:
    lab_upload = uploaded(api, lab_files.pdf())
    terra.path_status["/v2/lab-reports"] = 422
    lab_upload_submit_task.apply(kwargs={"lab_upload_id": lab_upload.pk})
    assert len(lab_report_requests(terra)) == 1
    lab_upload.refresh_from_db()
    assert (lab_upload.status, lab_upload.error) == ("failed", "Terra refused the file (HTTP 422).")
    assert api.get(lab_upload.pk).json()["error"] == "Terra refused the file (HTTP 422)."


def test_without_terra_credentials_the_upload_fails_with_the_reason(
    api: Api, s3: Any, terra: FakeTerra, settings: Any
) -> None:
    settings.TERRA_API_CONFIGURED = False
    lab_upload = uploaded(api, lab_files.pdf())
    assert lab_upload_submit_task(lab_upload.pk) == "failed"
    assert lab_report_requests(terra) == []
    lab_upload.refresh_from_db()
    assert lab_upload.error == "Terra is not configured on this server; the file was not sent for parsing."


@pytest.mark.parametrize(
    ("content", "max_pixels", "error"),
    [
        (lab_files.corrupt_heic(), None, "The HEIC image could not be read."),
        (lab_files.heic(), 32 * 24 - 1, "The image is 32x24 pixels; at most 767 pixels are accepted."),
    ],
    ids=["corrupt", "too-many-pixels"],
)
def test_a_heic_that_cannot_be_converted_fails_without_reaching_terra(
    api: Api, s3: Any, terra: FakeTerra, settings: Any, content: bytes, max_pixels: int | None, error: str
) -> None:
    lab_upload = uploaded(api, content)
    if max_pixels is not None:  # lowered after the upload: the worker checks again before decoding
        settings.AMY_HEIC_MAX_PIXELS = max_pixels
    assert lab_upload_submit_task(lab_upload.pk) == "failed"
    assert lab_report_requests(terra) == []
    lab_upload.refresh_from_db()
    assert (lab_upload.status, lab_upload.error) == ("failed", error)


def test_a_stored_file_that_is_gone_fails_the_upload(api: Api, s3: Any, terra: FakeTerra) -> None:
    lab_upload = uploaded(api, lab_files.pdf())
    s3.delete_object(Bucket=S3_BUCKET, Key=lab_upload.storage_key)
    assert lab_upload_submit_task(lab_upload.pk) == "failed"
    assert lab_report_requests(terra) == []
    lab_upload.refresh_from_db()
    assert lab_upload.error == "The stored file is missing."


def test_a_store_outage_is_retried_not_failed(api: Api, s3: Any, terra: FakeTerra, s3_down: None) -> None:
    lab_upload = LabUpload.objects.create(
        user_id=USER_A, filename="a.pdf", content_type="application/pdf", storage_key="labs/x/1/a.pdf"
    )
    with pytest.raises(LabStorageUnavailable):
        lab_upload_submit(lab_upload_id=lab_upload.pk, final_attempt=False)
    lab_upload.refresh_from_db()
    assert (lab_upload.status, lab_upload.error) == ("processing", None)


def test_a_deleted_upload_is_not_submitted(terra: FakeTerra) -> None:
    assert lab_upload_submit_task(-1) == "gone"
    assert terra.requests == []


def test_uploads_left_waiting_are_queued_again(user: User, queued: list[dict[str, Any]]) -> None:
    # given: an old upload never sent, an old one sent, a failed one and a fresh one
    def make(**fields: Any) -> LabUpload:
        return LabUpload.objects.create(user=user, content_type="application/pdf", storage_key="labs/k.pdf", **fields)

    waiting = make()
    make(terra_upload_id="upl_sent", submitted_at=timezone.now())
    make(status=LabUploadStatus.FAILED)
    fresh = make()
    LabUpload.objects.exclude(pk=fresh.pk).update(created_at=timezone.now() - timedelta(hours=1))
    # when
    count = lab_uploads_resubmit_stale(older_than=timedelta(minutes=30))
    # then
    assert count == 1
    assert [sent["kwargs"]["lab_upload_id"] for sent in queued] == [waiting.pk]


# The daily quota ----------------------------------------------------------------------------------


def seconds_to_utc_midnight() -> float:
    now = datetime.now(UTC)
    return (datetime.combine(now.date() + timedelta(days=1), time.min, tzinfo=UTC) - now).total_seconds()


def test_uploads_past_the_daily_quota_are_429_until_midnight_utc_and_replays_do_not_count(
    api: Api, api_b: Api, s3: Any, settings: Any
) -> None:
    settings.AMY_LAB_UPLOADS_PER_DAY = 2
    # yesterday's uploads do not count
    LabUpload.objects.create(user_id=USER_A, created_at=timezone.now() - timedelta(days=1))
    key = f"lab-{uuid.uuid4()}"
    first = api.client.post(
        "/v1/labs",
        {"file": SimpleUploadedFile("a.pdf", lab_files.pdf())},
        headers={**api.headers, "Idempotency-Key": key},
    )
    assert first.status_code == 202
    assert api.upload(lab_files.png()).status_code == 202
    # a replay of the first upload is answered before the view: not refused, and not counted
    replay = api.client.post(
        "/v1/labs",
        {"file": SimpleUploadedFile("a.pdf", lab_files.pdf())},
        headers={**api.headers, "Idempotency-Key": key},
    )
    assert (replay.status_code, replay["Idempotent-Replayed"]) == (202, "true")

    refused = api.upload(lab_files.pdf())

    assert refused.status_code == 429
    error = error_of(refused)
    assert error["code"] == "rate_limit_exceeded"
    assert {k: v for k, v in error["details"].items() if k != "resets_at"} == {
        "quota": "lab_uploads_per_day",
        "limit": 2,
        "used": 2,
    }
    assert abs(int(refused["Retry-After"]) - seconds_to_utc_midnight()) <= 5
    assert LabUpload.objects.filter(user_id=USER_A).count() == 3
    assert api_b.upload(lab_files.pdf()).status_code == 202  # another user's quota is their own
