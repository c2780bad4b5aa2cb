"""The console's sign-in locks out repeated failures of one username from one client address.

The lockout is django-axes', keyed on username and client address together: failures sent from
elsewhere, or for another username, never lock an operator out. Behind a reverse proxy the client
address is read through the trusted proxies (AMY_NUM_PROXIES), never from REMOTE_ADDR alone.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db

LOGIN = "/console/login/?next=/console/"
PASSWORD = "the-right-console-password"
PROXY = "10.0.0.7"


@pytest.fixture
def operator() -> str:
    username = f"operator-{uuid.uuid4().hex[:8]}"
    get_user_model().objects.create_superuser(username=username, email="", password=PASSWORD)
    return username


@pytest.fixture
def behind_one_proxy(settings: Any) -> None:
    settings.REST_FRAMEWORK = {**django_settings.REST_FRAMEWORK, "NUM_PROXIES": 1}


def an_address() -> str:
    return f"2001:db8::{uuid.uuid4().hex[:4]}"


def sign_in(username: str, password: str, *, remote: str, forwarded: str | None = None) -> int:
    client = Client(REMOTE_ADDR=remote)
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    response = client.post(LOGIN, {"username": username, "password": password}, headers=headers)
    if response.status_code == 302:  # signed in: the session must reach the console
        assert client.get("/console/").status_code == 200
    return response.status_code


def fail_until_locked(username: str, *, remote: str, forwarded: str | None = None) -> None:
    limit = django_settings.AXES_FAILURE_LIMIT
    failures = [sign_in(username, "wrong", remote=remote, forwarded=forwarded) for _ in range(limit)]
    assert failures[:-1] == [200] * (limit - 1)  # the form again, with its error
    assert failures[-1] == 429


def test_repeated_failures_lock_that_username_at_that_address_even_with_the_right_password(operator: str) -> None:
    attacker = an_address()
    fail_until_locked(operator, remote=attacker)
    assert sign_in(operator, PASSWORD, remote=attacker) == 429


def test_failures_from_another_address_never_lock_the_operator_out(operator: str) -> None:
    fail_until_locked(operator, remote=an_address())
    assert sign_in(operator, PASSWORD, remote=an_address()) == 302


def test_a_locked_address_may_still_sign_in_as_another_username(operator: str) -> None:
    colleague = f"colleague-{uuid.uuid4().hex[:8]}"
    get_user_model().objects.create_superuser(username=colleague, email="", password=PASSWORD)
    shared = an_address()
    fail_until_locked(operator, remote=shared)
    assert sign_in(colleague, PASSWORD, remote=shared) == 302


def test_behind_a_proxy_the_lockout_is_per_client_not_per_proxy(operator: str, behind_one_proxy: None) -> None:
    attacker, office = an_address(), an_address()
    fail_until_locked(operator, remote=PROXY, forwarded=attacker)
    assert sign_in(operator, PASSWORD, remote=PROXY, forwarded=attacker) == 429
    assert sign_in(operator, PASSWORD, remote=PROXY, forwarded=office) == 302


def test_a_success_before_the_limit_clears_the_count(operator: str) -> None:
    remote = an_address()
    limit = django_settings.AXES_FAILURE_LIMIT
    for _ in range(limit - 1):
        assert sign_in(operator, "wrong", remote=remote) == 200
    assert sign_in(operator, PASSWORD, remote=remote) == 302
    assert sign_in(operator, "wrong", remote=remote) == 200
