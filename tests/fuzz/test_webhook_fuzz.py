"""The webhook under generated bodies: a signed body is either stored (200 and a ledger
row holding it verbatim) or refused with the flat 4xx it deserves; nothing answers 5xx."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.models import RawEvent
from tests.conftest import PostWebhook
from tests.fuzz.strategies import huge_array_body, json_texts, payloads, sample_payloads

pytestmark = pytest.mark.django_db

FUZZ = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def is_json_object(body: bytes) -> bool:
    """What the webhook must accept: UTF-8 text holding a JSON object (Python's reading of JSON)."""
    try:
        return isinstance(json.loads(body.decode("utf-8")), dict)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False


def assert_stored_or_refused(response: Any, body: bytes) -> None:
    assert response.status_code < 500, (response.status_code, response.content[:500], body[:500])
    answer = response.json()
    request_id = response["x-amy-request-id"]
    if is_json_object(body):
        assert response.status_code == 200, (answer, body[:500])
        assert answer["ok"] is True
        assert answer["request_id"] == request_id
        if answer.get("duplicate"):
            assert RawEvent.objects.filter(payload=body.decode()).exists()
        else:
            row = RawEvent.objects.get(pk=answer["raw_event_id"])
            assert row.payload == body.decode()
            assert row.event_type == answer["type"]
            assert row.signature_verified is True
    else:
        assert (response.status_code, answer) == (400, {"error": "invalid_json", "request_id": request_id})


@settings(FUZZ, max_examples=200)
@given(body=json_texts())
def test_a_signed_body_is_stored_verbatim_or_refused_as_invalid_json_never_a_5xx(
    post_webhook: PostWebhook, body: bytes
) -> None:
    assert_stored_or_refused(post_webhook(body), body)


@settings(FUZZ, max_examples=60)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        # Text a sender encoded itself: lone surrogates written as raw bytes, a BOM, Latin-1.
        payloads().map(lambda p: json.dumps(p, ensure_ascii=False).encode("utf-8", "surrogatepass")),
        payloads().map(lambda p: b"\xef\xbb\xbf" + json.dumps(p).encode()),
        st.text(max_size=50).map(lambda t: json.dumps({"type": t}, ensure_ascii=False).encode("latin-1", "replace")),
    )
)
def test_signed_bytes_in_any_encoding_are_stored_or_refused_never_a_5xx(post_webhook: PostWebhook, body: bytes) -> None:
    assert_stored_or_refused(post_webhook(body), body)


@settings(FUZZ, max_examples=30)
@given(
    payload=sample_payloads(), path=st.sampled_from(["/webhooks/terra", "/webhook/terra", "/webhook", "/terra", "/"])
)
def test_every_alias_stores_the_same_mutated_samples(post_webhook: PostWebhook, payload: dict, path: str) -> None:
    body = json.dumps(payload).encode()
    assert_stored_or_refused(post_webhook(body, path=path), body)


@pytest.mark.parametrize("kind", ["daily", "body", "activity"])
def test_a_huge_data_array_within_the_cap_is_stored(post_webhook: PostWebhook, settings, kind: str) -> None:
    # given: a chunk as large as Terra sends (~10 MB), under a cap set just above it
    body = huge_array_body(kind, 1)
    body = huge_array_body(kind, max(1, 10_000_000 // len(body)))
    settings.AMY_WEBHOOK_MAX_BYTES = len(body) + 1
    # when / then
    assert_stored_or_refused(post_webhook(body), body)


def test_a_huge_data_array_over_the_cap_is_413_and_stores_nothing(post_webhook: PostWebhook, settings) -> None:
    body = huge_array_body("daily", 2_000)
    settings.AMY_WEBHOOK_MAX_BYTES = len(body) - 1
    response = post_webhook(body)
    assert (response.status_code, response.json()) == (
        413,
        {"error": "payload_too_large", "request_id": response["x-amy-request-id"]},
    )
    assert not RawEvent.objects.exists()


@pytest.mark.parametrize("event_type", [[], {}, ["lab_report.completed"], {"type": "sleep"}])
def test_a_type_that_is_a_list_or_an_object_is_stored_as_unknown(post_webhook: PostWebhook, event_type: Any) -> None:
    # Found by the fuzzer: an unhashable `type` made classify() raise TypeError (500).
    body = json.dumps({"type": event_type, "user": {"user_id": "u"}}).encode()
    response = post_webhook(body)
    assert (response.status_code, response.json()["type"]) == (200, "unknown")
