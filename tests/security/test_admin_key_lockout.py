"""Wrong ops keys never lock out the right one.

The failed-`x-admin-key` limit counts the client through the trusted proxies (AMY_NUM_PROXIES),
and a request carrying a valid key is never refused, however many wrong keys came before it.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

pytestmark = pytest.mark.django_db

PROXY = "10.0.0.7"  # the reverse proxy every request arrives from
LIMIT = 3


@pytest.fixture
def limited(settings: Any) -> None:
    settings.AMY_ADMIN_FAILURES_PER_MINUTE = LIMIT


@pytest.fixture
def behind_one_proxy(settings: Any, limited: None) -> None:
    settings.REST_FRAMEWORK = {**django_settings.REST_FRAMEWORK, "NUM_PROXIES": 1}


def an_address() -> str:
    """A fresh client address, so that no earlier test's failures count here."""
    return f"2001:db8::{uuid.uuid4().hex[:4]}"


def healthz(key: str, *, remote: str, forwarded: str | None = None) -> int:
    client = Client(REMOTE_ADDR=remote)
    headers = {"x-admin-key": key}
    if forwarded is not None:
        headers["x-forwarded-for"] = forwarded
    return client.get("/admin/healthz", headers=headers).status_code


def test_a_valid_key_is_answered_after_the_limit_of_wrong_keys_from_the_same_address(limited: None) -> None:
    remote = an_address()
    assert [healthz("wrong", remote=remote) for _ in range(LIMIT)] == [401] * LIMIT
    assert healthz("wrong", remote=remote) == 429
    assert healthz(django_settings.AMY_ADMIN_KEY, remote=remote) == 200
    assert healthz("wrong", remote=remote) == 429


def test_the_read_key_is_answered_after_the_limit_too(limited: None, settings: Any) -> None:
    settings.AMY_ADMIN_READ_KEY = "read-key-for-this-test"
    remote = an_address()
    for _ in range(LIMIT + 1):
        healthz("wrong", remote=remote)
    assert healthz("read-key-for-this-test", remote=remote) == 200


def test_behind_a_proxy_wrong_keys_from_one_client_do_not_refuse_another(behind_one_proxy: None) -> None:
    attacker, operator = an_address(), an_address()
    for _ in range(LIMIT):
        assert healthz("wrong", remote=PROXY, forwarded=attacker) == 401
    assert healthz("wrong", remote=PROXY, forwarded=attacker) == 429
    # another client behind the same proxy: its own mistakes count from zero
    assert healthz("typo", remote=PROXY, forwarded=operator) == 401
    assert healthz(django_settings.AMY_ADMIN_KEY, remote=PROXY, forwarded=operator) == 200


def test_behind_a_proxy_the_client_is_the_address_the_proxy_appended(behind_one_proxy: None) -> None:
    attacker = an_address()
    # a client cannot escape its count by writing its own X-Forwarded-For entries before the proxy's
    for n in range(LIMIT):
        assert healthz("wrong", remote=PROXY, forwarded=f"198.51.100.{n}, {attacker}") == 401
    assert healthz("wrong", remote=PROXY, forwarded=f"198.51.100.99, {attacker}") == 429


def test_without_trusted_proxies_a_client_sent_forwarded_for_is_ignored(limited: None) -> None:
    remote = an_address()
    for n in range(LIMIT):
        assert healthz("wrong", remote=remote, forwarded=f"198.51.100.{n}") == 401
    assert healthz("wrong", remote=remote, forwarded="198.51.100.200") == 429
