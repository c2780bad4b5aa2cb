"""Ops keys rotate without downtime: each key setting accepts several keys at once, comma-separated,
as TERRA_WEBHOOK_SECRET does (docs/deployment.md says how to roll one)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.admin_ops.helpers import dead

pytestmark = pytest.mark.django_db


@pytest.fixture
def rotating(settings: Any) -> None:
    settings.AMY_ADMIN_KEY = "new-admin-key, old-admin-key"
    settings.AMY_ADMIN_READ_KEY = "new-read-key,old-read-key,"


@pytest.mark.parametrize("key", ["new-admin-key", "old-admin-key", "new-read-key", "old-read-key"])
def test_every_listed_key_reads_while_a_key_is_rotated(client: Client, rotating: None, key: str) -> None:
    assert client.get("/admin/healthz", headers={"x-admin-key": key}).status_code == 200


@pytest.mark.parametrize("key", ["new-admin-key", "old-admin-key"])
def test_every_listed_admin_key_writes(client: Client, rotating: None, key: str) -> None:
    row = dead(n=1)
    response = client.post(f"/admin/raw-events/{row.pk}/replay", headers={"x-admin-key": key})
    assert response.status_code == 200


@pytest.mark.parametrize("key", ["new-read-key", "old-read-key"])
def test_a_listed_read_key_still_cannot_write(client: Client, rotating: None, key: str) -> None:
    row = dead(n=1)
    response = client.post(f"/admin/raw-events/{row.pk}/replay", headers={"x-admin-key": key})
    assert response.status_code == 403


@pytest.mark.parametrize(
    "key",
    ["new-admin-key, old-admin-key", "new-admin-key,old-admin-key", "", ",", "admin-key", "new-admin-key "],
)
def test_the_list_itself_or_a_part_of_a_key_is_not_a_key(client: Client, rotating: None, key: str) -> None:
    response = client.get("/admin/healthz", headers={"x-admin-key": key} if key else {})
    assert response.status_code == 401


def test_an_empty_read_key_setting_lets_no_key_in(client: Client, settings: Any) -> None:
    settings.AMY_ADMIN_KEY = "only-key"
    settings.AMY_ADMIN_READ_KEY = ""
    assert client.get("/admin/healthz", headers={"x-admin-key": "only-key"}).status_code == 200
    assert client.get("/admin/healthz", headers={"x-admin-key": ","}).status_code == 401
