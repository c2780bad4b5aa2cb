"""Body caps are enforced before a body is read whole.

Against a live gunicorn, a raw socket sends only the request head with a Content-Length past the
cap and then waits: the answer (413 in the right shape) arrives while not one byte of the body has
been sent, so the server decided from the head alone and never buffered the body. In process, a
body really sent over the cap is refused the same way and stores nothing.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from accounts.models import User
from accounts.tokens import cli_token_issue
from ingest.models import LabUpload, RawEvent
from tests.conftest import PostWebhook, database_url_for_tests
from tests.live import Gunicorn, service_env
from tests.terra import body_of

WEBHOOK_CAP = 1_000_000
LAB_CAP = 10 * 1024 * 1024
IMPORT_CAP = 50 * 1024 * 1024


def head_only(port: int, method: str, path: str, headers: dict[str, str], timeout: float = 10) -> tuple[int, dict]:
    """Send a request head, no body, and read the answer: (status, JSON body)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1"))
        received = b""
        # Read until the answer's own Content-Length is satisfied; a timeout here means the server
        # was waiting for the body we never send.
        while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < _length(received):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def _length(received: bytes) -> int:
    for line in received.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@pytest.fixture
def web() -> Iterator[Gunicorn]:
    server = Gunicorn(
        service_env(
            database_url=database_url_for_tests(),
            redis_url=django_settings.REDIS_URL,
            AMY_WEBHOOK_MAX_BYTES=str(WEBHOOK_CAP),
        ),
        workers=1,
    )
    server.start()
    yield server
    server.kill()


def assert_envelope_413(status: int, answer: dict[str, Any]) -> None:
    assert status == 413, answer
    assert answer["error"]["code"] == "payload_too_large"
    assert answer["error"]["request_id"].startswith("req_")


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_every_capped_body_is_refused_from_its_declared_length_before_any_of_it_is_sent(web: Gunicorn) -> None:
    token = cli_token_issue(user=User.objects.create(id="user_caps")).token
    auth = {"Authorization": f"Bearer {token}"}
    multipart = {"Content-Type": "multipart/form-data; boundary=xyz", **auth}

    # The webhook: its flat shape, and nothing stored.
    status, answer = head_only(
        web.port,
        "POST",
        "/webhooks/terra",
        {"Content-Type": "application/json", "Content-Length": str(WEBHOOK_CAP + 1), "terra-signature": "t=1,v1=ab"},
    )
    assert (status, answer["error"]) == (413, "payload_too_large")
    # A lab file over 10 MB, and an import over 50 MB, in the envelope.
    for path, cap in [("/v1/labs", LAB_CAP), ("/v1/labs/upload", LAB_CAP), ("/v1/import", IMPORT_CAP)]:
        status, answer = head_only(web.port, "POST", path, {**multipart, "Content-Length": str(cap + 10 * 1024 * 1024)})
        assert_envelope_413(status, answer)
    # A declared length of many gigabytes is the same answer, not a memory or disk commitment.
    status, answer = head_only(web.port, "POST", "/v1/labs", {**multipart, "Content-Length": str(2**40)})
    assert_envelope_413(status, answer)
    status, answer = head_only(
        web.port, "POST", "/webhook", {"Content-Length": str(2**40), "terra-signature": "t=1,v1=ab"}
    )
    assert (status, answer["error"]) == (413, "payload_too_large")
    assert not RawEvent.objects.exists()
    assert not LabUpload.objects.exists()


@pytest.mark.django_db
def test_a_webhook_body_sent_over_the_cap_is_413_and_stores_nothing(post_webhook: PostWebhook, settings: Any) -> None:
    settings.AMY_WEBHOOK_MAX_BYTES = 10_000
    body = body_of({"type": "sleep", "pad": "x" * 20_000})
    response = post_webhook(body)
    assert (response.status_code, response.json()) == (
        413,
        {"error": "payload_too_large", "request_id": response["x-amy-request-id"]},
    )
    assert not RawEvent.objects.exists()


@pytest.mark.django_db
def test_a_lab_file_one_byte_over_10_mb_is_413_in_the_envelope_and_stores_nothing(client: Client) -> None:
    token = cli_token_issue(user=User.objects.create(id="user_caps_in_process")).token
    oversized = SimpleUploadedFile(
        "report.pdf", b"%PDF-1.7\n" + b"0" * (LAB_CAP + 1 - 9), content_type="application/pdf"
    )
    response = client.post("/v1/labs", {"file": oversized}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert response.json()["error"]["request_id"] == response["x-amy-request-id"]
    assert not LabUpload.objects.exists()
