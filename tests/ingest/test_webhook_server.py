"""The webhook through the server the README runs (gunicorn), with what Terra's HTTP client may send
that Django's test client never does: a chunked body without Content-Length, and request heads whose
signature header is refused before any of the body has been sent."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings

from ingest.models import RawEvent
from tests.conftest import database_url_for_tests
from tests.live import Gunicorn, service_env
from tests.terra import body_of, sample, sign

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

CAP = 100_000


@pytest.fixture(scope="module")
def web(django_db_setup: None) -> Iterator[Gunicorn]:
    server = Gunicorn(
        service_env(
            database_url=database_url_for_tests(),
            redis_url=django_settings.REDIS_URL,
            AMY_WEBHOOK_MAX_BYTES=str(CAP),
        ),
        workers=1,
    )
    server.start()
    yield server
    server.kill()


def post_chunked(web: Gunicorn, chunks: list[bytes], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST the chunks with `Transfer-Encoding: chunked` and no Content-Length (http.client frames
    each item of an iterable body as one chunk)."""
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
    try:
        connection.request("POST", "/webhooks/terra", body=iter(chunks), headers=headers, encode_chunked=True)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def split(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def head_only(web: Gunicorn, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Send only a request head and read the answer. A timeout here means the server was waiting
    for a body that is never sent."""
    lines = ["POST /webhooks/terra HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    with socket.create_connection(("127.0.0.1", web.port), timeout=15) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1"))
        received = b""
        while True:
            head, _, body = received.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                None,
            )
            if length is not None and len(body) >= length:
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_a_chunked_webhook_without_content_length_is_read_to_its_end_and_stored_verbatim(web: Gunicorn) -> None:
    # given: a real sample, signed, sent in 7-byte chunks
    body = sample("sleep")
    headers = {"terra-signature": sign(body), "content-type": "application/json"}
    # when
    status, answer = post_chunked(web, split(body, 7), headers)
    # then
    assert status == 200, answer
    row = RawEvent.objects.get(pk=answer["raw_event_id"])
    assert row.payload == body.decode()
    assert row.event_type == "sleep"


def test_a_chunked_webhook_exactly_at_the_cap_is_accepted(web: Gunicorn) -> None:
    payload = {"type": "sleep", "pad": ""}
    payload["pad"] = "x" * (CAP - len(body_of(payload)))
    body = body_of(payload)
    assert len(body) == CAP
    status, answer = post_chunked(web, split(body, 8192), {"terra-signature": sign(body)})
    assert status == 200, answer
    assert len(RawEvent.objects.get().payload) == CAP


def test_a_chunked_webhook_past_the_cap_is_413_and_stores_nothing(web: Gunicorn) -> None:
    body = body_of({"type": "sleep", "pad": "x" * CAP})
    status, answer = post_chunked(web, split(body, 8192), {"terra-signature": sign(body)})
    assert (status, answer["error"]) == (413, "payload_too_large")
    assert not RawEvent.objects.exists()


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (None, "missing_header"),
        ("t=soon,v1=" + "0" * 64, "malformed_header"),
        (f"t={int(time.time())},v1=abc", "malformed_header"),
        (f"t={int(time.time()) - 3600},v1=" + "0" * 64, "stale"),
    ],
    ids=["missing", "bad-t", "not-a-digest", "stale"],
)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_refused_signature_header_is_answered_before_any_of_the_body_is_sent(
    web: Gunicorn, signature: str | None, reason: str, framing: str
) -> None:
    headers = {"Content-Type": "application/json"}
    headers |= {"Content-Length": "50000"} if framing == "content-length" else {"Transfer-Encoding": "chunked"}
    if signature is not None:
        headers["terra-signature"] = signature
    status, answer = head_only(web, headers)
    assert (status, answer["error"], answer["reason"]) == (401, "invalid_signature", reason)
    assert not RawEvent.objects.exists()
