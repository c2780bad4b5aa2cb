"""Idempotency-Key on authenticated POST /v1/*."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache
from django.test import Client

from accounts.idempotency import idempotency_forget_user
from accounts.models import IdempotencyKey, User
from accounts.tokens import cli_token_issue

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
