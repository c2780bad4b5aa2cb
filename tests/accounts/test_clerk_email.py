"""`email` in /v1/me: from the Clerk session token's `email` claim when the instance adds one, else
from Clerk's Backend API (the fake's `GET /v1/users/{id}` over loopback) on the user's first sight;
stored on the user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from accounts.models import User
from accounts.tokens import cli_token_issue
from tests.fake_clerk import SECRET_KEY, FakeClerk, clerk_user

pytestmark = pytest.mark.django_db

USER_ID = "user_2pQm9XkL4vN8rT1sYb6WcZ3eHdA"


@pytest.fixture
def clerk(fake_clerk: FakeClerk, settings: Any) -> Iterator[FakeClerk]:
    settings.CLERK_API_URL = fake_clerk.api_url
    settings.CLERK_SECRET_KEY = SECRET_KEY
    fake_clerk.users, fake_clerk.api_requests, fake_clerk.api_down = {}, [], False
    yield fake_clerk
    fake_clerk.users, fake_clerk.api_requests, fake_clerk.api_down = {}, [], False


def me(client: Client, token: str) -> dict[str, Any]:
    response = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.content
    return response.json()["user"]


def test_the_email_claim_of_the_session_token_is_stored_and_served(client: Client, clerk: FakeClerk) -> None:
    assert me(client, clerk.token(USER_ID, email="ada@example.com"))["email"] == "ada@example.com"
    assert User.objects.get(pk=USER_ID).email == "ada@example.com"
    assert clerk.api_requests == []  # the claim was enough


def test_without_a_claim_a_new_user_s_primary_email_comes_from_clerks_backend_api_once(
    client: Client, clerk: FakeClerk
) -> None:
    # given: Clerk knows two addresses; the second is primary
    clerk.users[USER_ID] = clerk_user(USER_ID, "old@example.com", "ada@example.com", primary=1)
    # when: first sight, then more requests, with a Clerk token and with a CLI token
    first = me(client, clerk.token(USER_ID))
    again = me(client, clerk.token(USER_ID))
    by_cli = me(client, cli_token_issue(user=User.objects.get(pk=USER_ID)).token)
    # then
    assert first["email"] == again["email"] == by_cli["email"] == "ada@example.com"
    assert User.objects.get(pk=USER_ID).email == "ada@example.com"
    assert clerk.api_requests == [f"/v1/users/{USER_ID}"]


def test_a_later_email_claim_replaces_the_stored_address(client: Client, clerk: FakeClerk) -> None:
    clerk.users[USER_ID] = clerk_user(USER_ID, "ada@example.com")
    assert me(client, clerk.token(USER_ID))["email"] == "ada@example.com"
    assert me(client, clerk.token(USER_ID, email="ada@new.example"))["email"] == "ada@new.example"


@pytest.mark.parametrize(
    "situation", ["clerk_down", "unknown_user", "no_address", "wrong_secret", "no_secret", "bad_claim"]
)
def test_when_no_address_can_be_had_the_email_is_null_and_me_still_answers(
    client: Client, clerk: FakeClerk, settings: Any, situation: str
) -> None:
    claims: dict[str, Any] = {}
    if situation == "clerk_down":
        clerk.users[USER_ID] = clerk_user(USER_ID, "ada@example.com")
        clerk.api_down = True
    elif situation == "no_address":
        clerk.users[USER_ID] = clerk_user(USER_ID)
    elif situation == "wrong_secret":
        clerk.users[USER_ID] = clerk_user(USER_ID, "ada@example.com")
        settings.CLERK_SECRET_KEY = "sk_test_not_this_one"
    elif situation == "no_secret":
        clerk.users[USER_ID] = clerk_user(USER_ID, "ada@example.com")
        settings.CLERK_SECRET_KEY = ""
    elif situation == "bad_claim":
        claims = {"email": "not an address"}
    token = clerk.token(USER_ID, **claims)
    assert me(client, token)["email"] is None
    assert User.objects.get(pk=USER_ID).email is None
    if situation == "no_secret":
        assert clerk.api_requests == []
