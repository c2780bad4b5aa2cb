"""Idempotency-Key on authenticated POST /v1/*."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory
from django.test.client import encode_multipart
from django.utils import timezone

from accounts.idempotency import IdempotencyMiddleware, _SpooledBody, idempotency_forget_user
from accounts.models import IdempotencyKey, User
from accounts.tokens import cli_token_issue
from tests.accounts import idempotency_urls

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.idempotency_urls")]


@pytest.fixture(autouse=True)
def empty_cache() -> None:
    cache.clear()


def token(user_id: str = "u1") -> str:
    return cli_token_issue(user=User.objects.get_or_create(id=user_id)[0]).token


def post(
    client: Client, body: dict, *, key: str | None = "key-1", user_token: str | None = None, path: str = "/v1/echo"
):
    headers = {"Authorization": f"Bearer {user_token or token()}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(path, body, content_type="application/json", headers=headers)


def test_the_same_key_and_body_replays_the_first_response(client: Client) -> None:
    first = post(client, {"a": 1})
    again = post(client, {"a": 1})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()  # the handler did not run a second time
    assert again["Idempotent-Replayed"] == "true"


def test_the_same_key_with_another_body_is_409_idempotency_key_mismatch(client: Client) -> None:
    post(client, {"a": 1})
    response = post(client, {"a": 2})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_mismatch"


def test_keys_are_per_user(client: Client) -> None:
    first = post(client, {"a": 1}, user_token=token("u1"))
    other = post(client, {"a": 1}, user_token=token("u2"))
    assert first.json()["run"] != other.json()["run"]


def test_without_a_key_every_request_runs(client: Client) -> None:
    assert post(client, {"a": 1}, key=None).json()["run"] != post(client, {"a": 1}, key=None).json()["run"]


def test_a_kept_response_expires(client: Client, settings) -> None:
    settings.AMY_IDEMPOTENCY_SECONDS = 1
    first = post(client, {"a": 1})
    time.sleep(1.5)
    assert post(client, {"a": 1}).json()["run"] != first.json()["run"]


def test_a_failed_request_is_not_kept_so_a_retry_runs_again(client: Client) -> None:
    assert post(client, {"fail": True}).status_code == 503
    assert post(client, {"fail": True}).status_code == 503
    assert post(client, {"fail": False}).status_code == 201


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "ünï"])
def test_a_malformed_key_is_400_invalid_field(client: Client, key: str) -> None:
    response = post(client, {"a": 1}, key=key)
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"field": "Idempotency-Key"}


def test_auth_endpoints_are_not_covered(client: Client) -> None:
    first = post(client, {"a": 1}, path="/v1/auth/echo")
    again = post(client, {"a": 1}, path="/v1/auth/echo")
    assert first.json()["run"] != again.json()["run"]


def test_an_unauthenticated_request_is_left_to_the_view(client: Client) -> None:
    response = client.post("/v1/echo", {}, content_type="application/json", headers={"Idempotency-Key": "k"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_authorization"


def test_forgetting_a_user_deletes_their_keys_and_kept_answers_only(client: Client) -> None:
    post(client, {"a": 1}, user_token=token("u1"))
    post(client, {"a": 1}, user_token=token("u2"))
    assert idempotency_forget_user("u1") == 1
    assert list(IdempotencyKey.objects.values_list("user_id", flat=True)) == ["u2"]


def upload(client: Client, files: dict[str, tuple[str, bytes]], *, boundary: str, key: str = "upload-1", **fields):
    data = {name: SimpleUploadedFile(file_name, content) for name, (file_name, content) in files.items()} | fields
    return client.post(
        "/v1/upload",
        encode_multipart(boundary, data),
        content_type=f"multipart/form-data; boundary={boundary}",
        headers={"Authorization": f"Bearer {token()}", "Idempotency-Key": key},
    )


def test_a_retried_upload_under_a_new_boundary_replays_the_first_answer(client: Client) -> None:
    file = b"%PDF-1.7\n" + b"x" * 5000
    first = upload(client, {"file": ("report.pdf", file)}, boundary="first-boundary", note="fasting")
    again = upload(client, {"file": ("report.pdf", file)}, boundary="retry-boundary-longer", note="fasting")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize(
    "change",
    [
        {"file": ("report.pdf", b"y" * (2 * 1024 * 1024))},  # same length as the first, past 1 MiB
        {"file": ("other-name.pdf", b"x" * (2 * 1024 * 1024))},
        {"attachment": ("report.pdf", b"x" * (2 * 1024 * 1024))},
    ],
)
def test_another_file_under_the_same_key_is_409_even_of_the_same_length(client: Client, change: dict) -> None:
    upload(client, {"file": ("report.pdf", b"x" * (2 * 1024 * 1024))}, boundary="b1")
    response = upload(client, change, boundary="b1")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_mismatch"


def test_another_field_value_under_the_same_key_is_409(client: Client) -> None:
    upload(client, {"file": ("a.pdf", b"same")}, boundary="b1", note="fasting")
    response = upload(client, {"file": ("a.pdf", b"same")}, boundary="b1", note="not fasting")
    assert response.json()["error"]["code"] == "idempotency_key_mismatch"


def test_the_view_still_reads_a_large_upload_whole_after_the_key_is_checked(client: Client) -> None:
    file = bytes(range(256)) * (12 * 1024)  # 3 MiB: spooled to disk before the view reads it
    response = upload(client, {"file": ("big.bin", file)}, boundary="b1", note="n")
    assert response.json()["files"] == {"file": hashlib.sha256(file).hexdigest()}
    assert response.json()["fields"] == {"note": "n"}


def test_a_json_body_is_compared_as_parsed_not_byte_for_byte(client: Client) -> None:
    headers = {"Authorization": f"Bearer {token()}", "Idempotency-Key": "json-1"}
    first = client.post("/v1/echo", b'{"a": 1, "b": [1, 2]}', content_type="application/json", headers=headers)
    again = client.post("/v1/echo", b'{"b":[1,2],"a":1}', content_type="application/json", headers=headers)
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()


def test_a_429_is_not_kept_so_the_retry_runs(client: Client) -> None:
    assert post(client, {"throttled": True}).status_code == 429
    assert "Idempotent-Replayed" not in post(client, {"throttled": True})
    assert not IdempotencyKey.objects.exists()


def test_a_running_request_holds_its_key_for_the_configured_time(client: Client, settings) -> None:
    settings.AMY_IDEMPOTENCY_IN_PROGRESS_SECONDS = 3600
    claim_seconds = upload(client, {"file": ("a.pdf", b"pdf")}, boundary="b1").json()["claim_seconds"]
    assert claim_seconds is not None
    assert 3500 < claim_seconds <= 3600


def test_a_key_whose_request_died_unanswered_is_free_once_its_claim_lapses(client: Client) -> None:
    post(client, {"a": 1}, key="died")
    # What a worker killed mid-request leaves: a claim with no answer, past its time.
    IdempotencyKey.objects.filter(key="died").update(status=None, locked_until=timezone.now() - timedelta(seconds=1))
    again = post(client, {"a": 1}, key="died")
    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again


def test_a_key_in_use_answers_409_idempotency_key_in_use(client: Client) -> None:
    post(client, {"a": 1}, key="running")
    IdempotencyKey.objects.filter(key="running").update(status=None)
    response = post(client, {"a": 1}, key="running")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_in_use"


def test_keys_survive_a_redis_outage_and_flush(client: Client, settings) -> None:
    first = post(client, {"a": 1}, key="outage")
    cache.clear()
    # Nothing listens on port 1: every cache call fails while the database answers.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1},
        }
    }
    again = post(client, {"a": 1}, key="outage")
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()


def test_expired_keys_are_pruned_as_new_keys_are_claimed(client: Client) -> None:
    for n in range(3):
        post(client, {"a": n}, key=f"old-{n}")
    IdempotencyKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    post(client, {"a": 1}, key="new")
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]


def test_a_body_read_past_the_cap_is_handed_to_the_view_whole() -> None:
    # A body without a declared length that turns out larger than any endpoint takes: it is not
    # fingerprinted, and the view still reads every byte (and refuses it itself).
    request = HttpRequest()
    request._stream = io.BytesIO(b"x" * 100)
    body = _SpooledBody(request, limit=10)
    body.hand_to_view(request)
    assert body.over_limit
    assert request.read() == b"x" * 100


@pytest.mark.django_db(transaction=True)
def test_a_retry_while_the_first_request_runs_is_409_in_use_then_replays_once_it_answered() -> None:
    # Two real concurrent requests, each on its own database connection.
    idempotency_urls.started.clear()
    idempotency_urls.release.clear()
    user_token = token()
    headers = {"Authorization": f"Bearer {user_token}", "Idempotency-Key": "slow-1"}
    answers: list = []

    def first() -> None:
        try:
            answers.append(Client().post("/v1/slow", {}, content_type="application/json", headers=headers))
        finally:
            connection.close()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert idempotency_urls.started.wait(timeout=30)
        during = Client().post("/v1/slow", {}, content_type="application/json", headers=headers)
        assert during.status_code == 409
        assert during.json()["error"]["code"] == "idempotency_key_in_use"
    finally:
        idempotency_urls.release.set()
        thread.join(timeout=60)
    after = Client().post("/v1/slow", {}, content_type="application/json", headers=headers)
    assert after["Idempotent-Replayed"] == "true"
    assert after.json() == answers[0].json()


@pytest.mark.parametrize(
    ("path", "declared"),
    [
        ("/v1/labs", 20 * 1024 * 1024),  # over the lab cap, under the import cap
        ("/v1/labs/upload", 11 * 1024 * 1024),
        ("/v1/import", 51 * 1024 * 1024),
        ("/v1/echo", 3 * 1024 * 1024),  # over what any other endpoint reads
    ],
)
def test_a_keyed_body_declared_over_its_endpoints_cap_is_left_unread_for_the_view_to_refuse(
    path: str, declared: int
) -> None:
    request = RequestFactory().post(
        path,
        b"only the head was sent",
        content_type="multipart/form-data; boundary=b",
        headers={"Authorization": f"Bearer {token()}", "Idempotency-Key": "big"},
    )
    request.META["CONTENT_LENGTH"] = str(declared)
    sent = request.META["wsgi.input"]
    seen: list[bool] = []

    def view(request: HttpRequest) -> HttpResponse:
        seen.append(sent.read_started)
        return HttpResponse(status=413)

    assert IdempotencyMiddleware(view)(request).status_code == 413
    assert seen == [False]  # the view gets the body as sent, not one byte of it read
    assert not IdempotencyKey.objects.exists()
