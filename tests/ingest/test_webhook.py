"""The Terra webhook: what it answers, and what it writes and publishes for each answer."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client

from ingest.models import RawEvent, RawEventSource, RawEventState
from tests.conftest import PostWebhook
from tests.terra import SAMPLES, body_of, sample, sign

pytestmark = pytest.mark.django_db

WEBHOOK_PATHS = ["/webhooks/terra", "/webhook/terra", "/webhook", "/terra", "/"]

# The event type each sample is stored under: `type`, except the lab shapes.
EXPECTED_TYPES = {name: json.loads(sample(name)).get("type") or "lab_report" for name in SAMPLES} | {
    "lab_report_completed": "lab_report",
    "lab_report_failed": "lab_report",
}


@pytest.mark.parametrize("path", WEBHOOK_PATHS)
def test_every_sample_is_accepted_on_every_path_and_stored_verbatim(post_webhook: PostWebhook, path: str) -> None:
    for name in SAMPLES:
        # given
        body = sample(name)
        # when
        response = post_webhook(body, path=path)
        # then
        assert response.status_code == 200, (name, response.content)
        answer = response.json()
        row = RawEvent.objects.get(pk=answer["raw_event_id"])
        assert answer == {
            "ok": True,
            "raw_event_id": row.pk,
            "type": EXPECTED_TYPES[name],
            "request_id": response["x-amy-request-id"],
        }
        assert row.payload == body.decode()
        assert row.event_type == EXPECTED_TYPES[name]
        assert row.state == RawEventState.RECEIVED
        assert row.signature_verified is True
        assert row.source == RawEventSource.WEBHOOK
        assert row.request_id == answer["request_id"]
    assert RawEvent.objects.count() == len(SAMPLES)


def test_a_wearable_event_is_keyed_by_its_terra_user(post_webhook: PostWebhook) -> None:
    response = post_webhook(sample("sleep"))
    row = RawEvent.objects.get(pk=response.json()["raw_event_id"])
    assert (row.event_type, row.terra_user_id, row.provider, row.reference_id) == (
        "sleep",
        "7c0d2f1e-3b8a-4e5d-9f60-1a2b3c4d5e6f",
        "OURA",
        "user_2pQm9XkL4vN8rT1sYb6WcZ3eHdA",
    )
    assert len(row.dedup_key) == 64


def test_user_reauth_is_keyed_by_the_new_terra_user(post_webhook: PostWebhook) -> None:
    row = RawEvent.objects.get(pk=post_webhook(sample("user_reauth")).json()["raw_event_id"])
    assert row.terra_user_id == "d2c3b4a5-9687-4a1b-8c2d-3e4f5a6b7c8d"


@pytest.mark.parametrize("name", ["lab_report", "lab_report_completed", "lab_report_failed"])
def test_lab_reports_are_recognized_in_all_three_shapes(post_webhook: PostWebhook, name: str) -> None:
    response = post_webhook(sample(name))
    row = RawEvent.objects.get(pk=response.json()["raw_event_id"])
    assert (row.event_type, row.terra_user_id) == ("lab_report", "")
    assert row.reference_id == json.loads(sample(name))["upload_id"]


@pytest.mark.parametrize(
    "payload",
    [{"hello": "world"}, {"type": None}, {"type": 7}, {"type": ""}, {"type": "x" * 65}, {"upload_id": "u1"}],
)
def test_a_body_without_a_usable_type_is_stored_as_unknown(post_webhook: PostWebhook, payload: dict) -> None:
    response = post_webhook(body_of(payload))
    assert response.status_code == 200
    assert response.json()["type"] == "unknown"
    assert RawEvent.objects.get().event_type == "unknown"


def test_hostile_user_fields_are_stored_as_an_ordinary_row(post_webhook: PostWebhook) -> None:
    payload = {"type": "sleep", "user": {"user_id": "a\u0000b", "provider": "\ud83d", "reference_id": "r" * 10_000}}
    response = post_webhook(json.dumps(payload).encode())
    assert response.status_code == 200
    row = RawEvent.objects.get()
    assert (row.event_type, row.terra_user_id, row.provider, row.reference_id) == ("sleep", "", "", "")


def test_terras_delivery_headers_are_kept_on_the_row(post_webhook: PostWebhook) -> None:
    body = sample("daily")
    headers = {
        "terra-signature": sign(body),
        "X-Terra-Trace-Id": "3c1f:chunk:2",
        "terra-reference": "e4b1c9d2-7a35-4f68-9b0e-1c2d3e4f5a6b",
        "x-terra-ordering-timestamp": "1764051165123",
    }
    row = RawEvent.objects.get(pk=post_webhook(body, headers=headers).json()["raw_event_id"])
    assert (row.trace_id, row.terra_reference, row.ordering_ts) == (
        "3c1f:chunk:2",
        "e4b1c9d2-7a35-4f68-9b0e-1c2d3e4f5a6b",
        1764051165123,
    )


def test_a_malformed_ordering_timestamp_is_stored_as_null(post_webhook: PostWebhook) -> None:
    body = sample("daily")
    headers = {"terra-signature": sign(body), "x-terra-ordering-timestamp": "soon"}
    assert RawEvent.objects.get(pk=post_webhook(body, headers=headers).json()["raw_event_id"]).ordering_ts is None


def test_the_x_terra_signature_header_name_is_accepted(post_webhook: PostWebhook) -> None:
    body = sample("sleep")
    assert post_webhook(body, headers={"X-Terra-Signature": sign(body)}).status_code == 200


def test_a_body_signed_with_the_previous_secret_is_accepted(post_webhook: PostWebhook, settings) -> None:
    settings.TERRA_WEBHOOK_SECRETS = ["new-secret", "old-secret"]
    body = sample("sleep")
    assert post_webhook(body, headers={"terra-signature": sign(body, secret="old-secret")}).status_code == 200


def test_a_redelivered_body_is_a_duplicate_that_writes_and_publishes_nothing(
    post_webhook: PostWebhook, django_capture_on_commit_callbacks
) -> None:
    # given
    body = sample("sleep")
    with django_capture_on_commit_callbacks() as first_publishes:
        first = post_webhook(body)
    # when: Terra retries the delivery, re-signed at a later time
    with django_capture_on_commit_callbacks() as second_publishes:
        second = post_webhook(body, headers={"terra-signature": sign(body, at=int(time.time()) + 5)})
    # then
    assert len(first_publishes) == 1
    assert second.status_code == 200
    assert second.json() == {
        "ok": True,
        "duplicate": True,
        "type": "sleep",
        "request_id": second["x-amy-request-id"],
    }
    assert second_publishes == []
    assert RawEvent.objects.get().pk == first.json()["raw_event_id"]


def test_the_same_body_from_two_terra_users_is_two_events(post_webhook: PostWebhook) -> None:
    first = json.loads(sample("sleep"))
    second = json.loads(sample("sleep"))
    second["user"]["user_id"] = "another-terra-user"
    assert post_webhook(body_of(first)).json()["raw_event_id"] != post_webhook(body_of(second)).json()["raw_event_id"]


def _rejected(response, status: int, body: dict) -> None:
    assert response.status_code == status
    assert response.json() == {**body, "request_id": response["x-amy-request-id"]}
    assert not RawEvent.objects.exists()


@pytest.mark.parametrize("path", WEBHOOK_PATHS)
def test_a_missing_signature_is_refused_on_every_path(post_webhook: PostWebhook, path: str) -> None:
    response = post_webhook(sample("sleep"), path=path, headers={})
    _rejected(response, 401, {"error": "invalid_signature", "reason": "missing_header"})


@pytest.mark.parametrize("header", ["t=1,v2=abc", "v1=abc", "nonsense", "t=soon,v1=abc"])
def test_a_malformed_signature_header_is_refused(post_webhook: PostWebhook, header: str) -> None:
    response = post_webhook(sample("sleep"), headers={"terra-signature": header})
    _rejected(response, 401, {"error": "invalid_signature", "reason": "malformed_header"})


@pytest.mark.parametrize("offset", [-301, 301])
def test_a_stale_signature_is_refused_in_both_directions(post_webhook: PostWebhook, offset: int) -> None:
    body = sample("sleep")
    response = post_webhook(body, headers={"terra-signature": sign(body, at=int(time.time()) + offset)})
    _rejected(response, 401, {"error": "invalid_signature", "reason": "stale"})


def test_a_wrong_signature_is_refused(post_webhook: PostWebhook) -> None:
    body = sample("sleep")
    response = post_webhook(body, headers={"terra-signature": sign(body, secret="not-the-secret")})
    _rejected(response, 401, {"error": "invalid_signature", "reason": "mismatch"})


@pytest.mark.parametrize(
    "body",
    [b"", b"{not json", b'{"type": "sleep"', b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000, b'\xef\xbb\xbf{"a": 1}'],
    ids=["empty", "garbage", "truncated", "not-utf8", "deep-nesting", "bom"],
)
def test_a_signed_body_that_is_not_json_is_refused(post_webhook: PostWebhook, body: bytes) -> None:
    _rejected(post_webhook(body), 400, {"error": "invalid_json"})


@pytest.mark.parametrize("body", [b"[]", b'"sleep"', b"42", b"null", b"true"])
def test_a_signed_body_that_is_not_a_json_object_is_refused(post_webhook: PostWebhook, body: bytes) -> None:
    _rejected(post_webhook(body), 400, {"error": "invalid_json"})


def test_a_body_over_the_cap_is_refused_with_413(post_webhook: PostWebhook, settings) -> None:
    settings.AMY_WEBHOOK_MAX_BYTES = 1000
    body = body_of({"type": "sleep", "pad": "x" * 1000})
    _rejected(post_webhook(body), 413, {"error": "payload_too_large"})


def test_a_body_at_the_cap_is_accepted(post_webhook: PostWebhook, settings) -> None:
    body = body_of({"type": "sleep", "pad": "x" * 1000})
    settings.AMY_WEBHOOK_MAX_BYTES = len(body)
    assert post_webhook(body).status_code == 200


def test_a_body_larger_than_djangos_upload_limit_is_accepted(post_webhook: PostWebhook) -> None:
    # DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) must not reject a valid multi-MB Terra payload.
    body = body_of({"type": "activity", "data": [{"samples": "x" * 5_000_000}]})
    assert post_webhook(body).status_code == 200
    assert len(RawEvent.objects.get().payload) == len(body)


def test_get_on_a_webhook_path_is_405_in_the_envelope(client: Client) -> None:
    response = client.get("/webhooks/terra")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response["Allow"] == "POST"


def test_no_log_line_carries_a_secret_a_signature_or_the_body(post_webhook: PostWebhook, caplog, settings) -> None:
    # given: every log record of accepted, duplicate and refused bodies
    caplog.set_level("DEBUG")
    body = sample("auth_success")
    signature = sign(body)
    post_webhook(body, headers={"terra-signature": signature})
    post_webhook(body)
    post_webhook(body, headers={"terra-signature": sign(body, secret="wrong-secret")})
    post_webhook(b"{not json")
    # then
    logged = caplog.text + " ".join(str(vars(record)) for record in caplog.records)
    assert "raw_event" in logged  # the lines are there...
    for secret in [*settings.TERRA_WEBHOOK_SECRETS, "wrong-secret", signature.split("v1=")[1]]:
        assert secret not in logged  # ...but no secret or signature in any of them
    assert "user_2pQm9XkL4vN8rT1sYb6WcZ3eHdA" not in logged  # nor the body's contents
