"""Ping mode: an `s3_payload` event's body is fetched into its own ledger row.

The pre-signed URLs point at a loopback server (tests/payload_server.py) standing in for S3, which
AMY_S3_PAYLOAD_HOSTS lists for these tests (what it refuses: tests/security/test_s3_payload_fetch.py).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from itertools import count
from typing import Any

import pytest

from accounts.models import User
from ingest.classify import classify
from ingest.models import DailySummary, LabUpload, RawEvent, RawEventSource, RawEventState, TerraConnection
from ingest.services.processing import ProcessResult, ProcessStatus, raw_event_process
from ingest.services.webhook import DeliveryHeaders, dedup_key_for, raw_event_insert
from tests.payload_server import PayloadServer
from tests.terra import body_of, sample

pytestmark = pytest.mark.django_db

GARMIN_TERRA_USER = "b3e4a6c1-52d9-4f8e-a7b0-6c9d1e2f3a45"  # daily.json
OUR_USER = "user_2pQm9XkL4vN8rT1sYb6WcZ3eHdA"

_paths = count(1)


@pytest.fixture(scope="module")
def payload_server_running() -> Iterator[PayloadServer]:
    server = PayloadServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def payload_server(payload_server_running: PayloadServer, settings: Any) -> PayloadServer:
    """The loopback stand-in for S3, listed as an origin the worker may fetch from."""
    settings.AMY_S3_PAYLOAD_HOSTS = [payload_server_running.origin]
    return payload_server_running


def new_path(name: str = "daily") -> str:
    """A fresh object key per test, so that each ping body (and its dedup key) is new."""
    return f"/b3e4a6c1/{name}/{next(_paths)}.json"


def ping(url: str) -> bytes:
    return body_of({"type": "s3_payload", "status": "success", "url": url, "expires_in": 300})


def store(body: bytes, headers: DeliveryHeaders | None = None) -> RawEvent:
    raw_event_id = raw_event_insert(
        body_text=body.decode(),
        dedup_key=dedup_key_for(body),
        classification=classify(json.loads(body)),
        request_id="req_ping",
        headers=headers or DeliveryHeaders(),
    )
    assert raw_event_id is not None
    return RawEvent.objects.get(pk=raw_event_id)


def process(raw_event: RawEvent) -> tuple[ProcessResult, RawEvent]:
    result = raw_event_process(raw_event_id=raw_event.pk)
    raw_event.refresh_from_db()
    return result, raw_event


def children_of(raw_event: RawEvent) -> list[RawEvent]:
    return list(RawEvent.objects.filter(parent_id=raw_event.pk))


def test_the_fetched_body_becomes_its_own_ledger_row_and_the_ping_is_skipped(
    payload_server: PayloadServer, django_capture_on_commit_callbacks
) -> None:
    # given
    body = sample("daily")
    headers = DeliveryHeaders(trace_id="trace-1", terra_reference="ref-1", ordering_ts=1_764_000_000_000)
    raw_event = store(ping(payload_server.serve(new_path(), body)), headers)
    # when
    with django_capture_on_commit_callbacks() as after_commit:
        result, raw_event = process(raw_event)
    # then: the ping is done with, for good (a renormalize never needs the expired link)
    assert result.status == ProcessStatus.DONE
    assert (raw_event.state, raw_event.process_error) == (RawEventState.SKIPPED, "skipped:s3_payload_fetched")
    assert raw_event.processed_at is not None
    # and the body is stored verbatim, classified and deduplicated as a pushed webhook would be
    [child] = children_of(raw_event)
    assert child.payload == body.decode()
    assert (child.source, child.state, child.signature_verified) == (RawEventSource.S3_PAYLOAD, "received", True)
    assert (child.event_type, child.terra_user_id, child.provider) == ("daily", GARMIN_TERRA_USER, "GARMIN")
    assert (child.dedup_key, child.request_id) == (dedup_key_for(body), "req_ping")
    assert (child.trace_id, child.terra_reference, child.ordering_ts) == ("trace-1", "ref-1", 1_764_000_000_000)
    assert len(after_commit) == 1  # its nudge, once the transaction commits


def test_the_fetched_row_is_normalized_as_if_delivered_directly(payload_server: PayloadServer) -> None:
    TerraConnection.objects.create(user=User.objects.create(id=OUR_USER), terra_user_id=GARMIN_TERRA_USER)
    _, raw_event = process(store(ping(payload_server.serve(new_path(), sample("daily")))))
    [child] = children_of(raw_event)
    _, child = process(child)
    assert (child.state, child.user_id) == (RawEventState.PROCESSED, OUR_USER)
    daily = DailySummary.objects.get(user_id=OUR_USER)
    assert (str(daily.date), daily.steps, daily.raw_event_id) == ("2026-11-23", 11894, child.pk)


def test_a_fetched_lab_report_keeps_its_upload_id(payload_server: PayloadServer) -> None:
    _, raw_event = process(store(ping(payload_server.serve(new_path("lab"), sample("lab_report")))))
    [child] = children_of(raw_event)
    assert (child.event_type, child.reference_id) == ("lab_report", "upl_7f3a9c2e5b1d")
    assert LabUpload.objects.count() == 0


def test_a_body_already_in_the_ledger_is_not_stored_twice(
    payload_server: PayloadServer, django_capture_on_commit_callbacks
) -> None:
    # given: the same body was also pushed directly, and the ping is processed twice (a replay)
    pushed = store(sample("daily"))
    raw_event = store(ping(payload_server.serve(new_path(), sample("daily"))))
    # when
    with django_capture_on_commit_callbacks() as after_commit:
        _, raw_event = process(raw_event)
        RawEvent.objects.filter(pk=raw_event.pk).update(state=RawEventState.RECEIVED)
        _, raw_event = process(raw_event)
    # then
    assert (raw_event.state, raw_event.process_error) == (RawEventState.SKIPPED, "skipped:s3_payload_fetched")
    assert children_of(raw_event) == []
    assert RawEvent.objects.filter(event_type="daily").get().pk == pushed.pk
    assert after_commit == []


def test_an_expired_link_is_bad_data_and_the_url_is_not_in_the_error(payload_server: PayloadServer) -> None:
    url = payload_server.serve(new_path(), b"<Error><Code>AccessDenied</Code></Error>", status=403)
    result, raw_event = process(store(ping(url)))
    assert result.status == ProcessStatus.DEAD
    assert (raw_event.state, raw_event.attempts) == (RawEventState.DEAD, 1)
    assert raw_event.process_error == "bad_data: s3_payload fetch from 127.0.0.1 answered 403"
    assert children_of(raw_event) == []


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_server_error_is_transient_and_retried(payload_server: PayloadServer, status: int) -> None:
    result, raw_event = process(store(ping(payload_server.serve(new_path(), b"oops", status=status))))
    assert result.status == ProcessStatus.RETRY
    assert (raw_event.state, raw_event.attempts) == (RawEventState.PROCESSING, 1)
    assert raw_event.process_error == f"TransientError: s3_payload fetch from 127.0.0.1 answered {status}"
    assert raw_event.lease_until is not None
    assert children_of(raw_event) == []


def test_a_slow_server_times_out_and_is_retried(payload_server: PayloadServer, settings) -> None:
    settings.TERRA_API_TIMEOUT_SECONDS = 0.2
    url = payload_server.serve(new_path(), sample("daily"), delay=1.0)
    result, raw_event = process(store(ping(url)))
    assert result.status == ProcessStatus.RETRY
    assert raw_event.process_error == "TransientError: s3_payload fetch from 127.0.0.1 timed out"
    assert children_of(raw_event) == []


def test_an_unreachable_server_is_retried(settings: Any) -> None:
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.AMY_S3_PAYLOAD_HOSTS = [f"http://127.0.0.1:{port}"]
    result, raw_event = process(store(ping(f"http://127.0.0.1:{port}/daily/1.json")))
    assert result.status == ProcessStatus.RETRY
    assert raw_event.process_error == "TransientError: s3_payload fetch from 127.0.0.1 failed: ConnectError"


@pytest.mark.parametrize("content_length", [True, False])
def test_a_body_over_the_webhook_cap_is_bad_data(payload_server: PayloadServer, settings, content_length: bool) -> None:
    settings.AMY_WEBHOOK_MAX_BYTES = 1000
    body = body_of({"type": "daily", "user": {"user_id": "t1"}, "data": [], "padding": "x" * 1000})
    url = payload_server.serve(new_path(), body, content_length=content_length)
    result, raw_event = process(store(ping(url)))
    assert result.status == ProcessStatus.DEAD
    assert raw_event.process_error.startswith("bad_data: s3_payload body")
    assert raw_event.process_error.endswith("is over 1000 bytes")
    assert children_of(raw_event) == []


def test_a_body_at_the_cap_is_fetched(payload_server: PayloadServer, settings) -> None:
    body = body_of({"type": "daily", "user": {"user_id": "t1"}, "data": []})
    settings.AMY_WEBHOOK_MAX_BYTES = len(body)
    _, raw_event = process(store(ping(payload_server.serve(new_path(), body, content_length=False))))
    assert raw_event.state == RawEventState.SKIPPED
    assert [child.payload for child in children_of(raw_event)] == [body.decode()]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"<html>not json</html>", "bad_data: fetched payload is not JSON: JSONDecodeError"),
        (b"\xff\xfe{}", "bad_data: fetched payload is not JSON: UnicodeDecodeError"),
        (b"[1, 2]", "bad_data: fetched payload is not a JSON object"),
        (
            body_of({"type": "s3_payload", "url": "http://127.0.0.1:1/x"}),
            "bad_data: fetched payload is itself an s3_payload",
        ),
    ],
)
def test_a_fetched_body_that_is_not_a_terra_object_is_bad_data(
    payload_server: PayloadServer, body: bytes, error: str
) -> None:
    result, raw_event = process(store(ping(payload_server.serve(new_path(), body))))
    assert result.status == ProcessStatus.DEAD
    assert raw_event.process_error == error
    assert children_of(raw_event) == []


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "s3_payload", "status": "success", "expires_in": 300},
        {"type": "s3_payload", "url": 42},
        {"type": "s3_payload", "url": "ftp://terra-payloads.example.com/x.json"},
        {"type": "s3_payload", "url": "https:///no-host"},
        {"type": "s3_payload", "url": "http://[::1"},
    ],
)
def test_a_missing_or_non_http_url_is_bad_data(payload: dict[str, object]) -> None:
    result, raw_event = process(store(body_of(payload)))
    assert result.status == ProcessStatus.DEAD
    assert raw_event.process_error == "bad_data: url is missing or not an http(s) URL"
