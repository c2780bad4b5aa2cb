"""`GET /admin/user/<id>`: the snapshot's recent traces — the rows naming the user and the
journeys of the user's ledger rows, newest first, at most `traces_limit`."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import User
from admin_ops.models import TraceEvent
from admin_ops.services import USER_TRACES_LIMIT
from ingest.models import RawEvent, TerraConnection
from tests.admin_ops.helpers import READ
from tests.ledger import store
from tests.terra import body_of

pytestmark = [pytest.mark.django_db, pytest.mark.urls("admin_ops.urls")]

T0 = timezone.now() - timedelta(hours=1)


def _trace(event: str, at: datetime, **ids: object) -> TraceEvent:
    return TraceEvent.objects.create(ts=at, level="info", event=event, **ids)


def _ledger_row(terra_user_id: str, request_id: str, n: int = 0) -> RawEvent:
    raw_event = store(body_of({"type": "daily", "user": {"user_id": terra_user_id}, "data": [], "n": n}))
    RawEvent.objects.filter(pk=raw_event.pk).update(request_id=request_id)
    return raw_event


def _snapshot(client: Client, user_id: str) -> dict:
    response = client.get(f"/admin/user/{user_id}", headers=READ)
    assert response.status_code == 200
    return response.json()


def test_the_snapshot_lists_the_traces_naming_the_user_newest_first(client: Client) -> None:
    User.objects.create(id="u_traced")
    _trace("reconcile_summary", T0, user_id="u_traced")
    _trace("connect_complete", T0 + timedelta(minutes=5), user_id="u_traced", data={"provider": "OURA"})
    _trace("connect_complete", T0 + timedelta(minutes=6), user_id="someone_else")

    body = _snapshot(client, "u_traced")

    assert [(t["event"], t["user_id"]) for t in body["traces"]] == [
        ("connect_complete", "u_traced"),
        ("reconcile_summary", "u_traced"),
    ]
    assert body["traces"][0]["data"] == {"provider": "OURA"}
    assert set(body["traces"][0]) == {
        "id",
        "ts",
        "request_id",
        "user_id",
        "terra_user_id",
        "raw_event_id",
        "level",
        "event",
        "message",
        "data",
        "duration_ms",
        "error_name",
        "error_stack",
    }


def test_the_snapshot_includes_the_webhook_and_worker_journey_of_the_users_ledger_rows(client: Client) -> None:
    user = User.objects.create(id="u_journey")
    TerraConnection.objects.create(user=user, terra_user_id="tu-journey")
    mine = _ledger_row("tu-journey", "req_mine")
    theirs = _ledger_row("tu-stranger", "req_theirs", n=1)
    # The webhook's start row knows only its request id; the rest name the raw event.
    _trace("webhook_start", T0, request_id="req_mine")
    _trace("webhook_complete", T0 + timedelta(seconds=1), request_id="req_mine", raw_event_id=mine.pk)
    _trace("normalize_complete", T0 + timedelta(seconds=2), raw_event_id=mine.pk)
    _trace("webhook_start", T0, request_id="req_theirs")
    _trace("normalize_complete", T0 + timedelta(seconds=3), raw_event_id=theirs.pk)

    body = _snapshot(client, "u_journey")

    assert [t["event"] for t in body["traces"]] == ["normalize_complete", "webhook_complete", "webhook_start"]
    assert {t["raw_event_id"] for t in body["traces"]} == {mine.pk, None}


def test_the_snapshot_keeps_only_the_newest_traces_and_says_its_bound(client: Client) -> None:
    User.objects.create(id="u_busy")
    for minute in range(USER_TRACES_LIMIT + 10):
        _trace(f"step_{minute}", T0 + timedelta(minutes=minute), user_id="u_busy")

    body = _snapshot(client, "u_busy")

    assert body["traces_limit"] == USER_TRACES_LIMIT == 50
    assert len(body["traces"]) == USER_TRACES_LIMIT
    assert body["traces"][0]["event"] == f"step_{USER_TRACES_LIMIT + 9}"
    assert body["traces"][-1]["event"] == "step_10"


def test_a_user_without_traces_has_an_empty_list(client: Client) -> None:
    user = User.objects.create(id="u_quiet")
    TerraConnection.objects.create(user=user, terra_user_id="tu-quiet")

    body = _snapshot(client, "u_quiet")

    assert body["traces"] == []
    assert body["traces_limit"] == USER_TRACES_LIMIT
