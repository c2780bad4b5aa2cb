"""The JSON ops API: the admin key, /admin/healthz, /admin/dlq, raw events, users."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError
from django.db.models.functions import Now
from django.test import Client

from accounts.models import User
from admin_ops import services
from ingest.models import DailySummary, LabUpload, RawEvent, RawEventState, TerraConnection
from tests.admin_ops.helpers import ADMIN_KEY, READ, WRITE, dead
from tests.ledger import store
from tests.terra import body_of

pytestmark = [pytest.mark.django_db, pytest.mark.urls("admin_ops.urls")]


# The admin key ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/admin/healthz"), ("get", "/admin/dlq"), ("post", "/admin/dlq/replay"), ("get", "/admin/user/u1")],
)
def test_a_missing_key_is_401_missing_authorization(client: Client, method: str, path: str) -> None:
    response = getattr(client, method)(path)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_authorization"


def test_a_wrong_key_is_401_invalid_token(client: Client) -> None:
    response = client.get("/admin/dlq", headers={"x-admin-key": "not-the-key"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


def test_the_key_is_never_read_from_the_query_string(client: Client) -> None:
    response = client.get(f"/admin/dlq?x-admin-key={ADMIN_KEY}")
    assert response.status_code == 401


def test_the_read_key_may_read(client: Client) -> None:
    raw_event = dead()
    assert client.get("/admin/dlq", headers=READ).status_code == 200
    assert client.get(f"/admin/raw-events/{raw_event.pk}", headers=READ).status_code == 200


@pytest.mark.parametrize("path", ["/admin/dlq/replay", "/admin/raw-events/{id}/replay"])
def test_the_read_key_on_a_write_is_403_forbidden(client: Client, path: str) -> None:
    raw_event = dead()
    response = client.post(
        path.format(id=raw_event.pk), {"ids": [raw_event.pk]}, content_type="application/json", headers=READ
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert RawEvent.objects.get(pk=raw_event.pk).state == "dead"


def test_the_write_key_may_write(client: Client) -> None:
    raw_event = dead()
    response = client.post(f"/admin/raw-events/{raw_event.pk}/replay", headers=WRITE)
    assert response.status_code == 200


# /admin/healthz -----------------------------------------------------------------------------------

COUNTERS = {
    "users",
    "active_connections",
    "raw_events_total",
    "raw_events_unprocessed",
    "raw_events_errored",
    "raw_events_dead_lettered",
    "raw_events_last_hour",
    "daily_summary",
    "activities",
    "sleep_sessions",
    "biomarkers",
    "lab_uploads",
    "raw_events_parked",
    "raw_events_skipped",
    "queue_depth",
    "dlq_depth",
    "ok",
}


def _ledger(states: dict[str, int]) -> None:
    n = 0
    for state, count in states.items():
        for _ in range(count):
            n += 1
            raw_event = store(body_of({"type": "daily", "user": {"user_id": "tu"}, "data": [], "n": n}))
            RawEvent.objects.filter(pk=raw_event.pk).update(state=state)


def test_admin_healthz_counts_the_ledger_and_the_queues(client: Client, redis_client: Any) -> None:
    user = User.objects.create(id="u1")
    TerraConnection.objects.create(user=user, terra_user_id="tu-active")
    TerraConnection.objects.create(user=user, terra_user_id="tu-gone", status="revoked")
    LabUpload.objects.create(user=user)
    _ledger({"received": 2, "processing": 1, "processed": 3, "dead": 2, "parked": 1, "skipped": 4})
    RawEvent.objects.filter(state="processed").update(received_at=Now() - timedelta(hours=2))
    redis_client.rpush("terra-events", "a", "b", "c")
    redis_client.rpush("terra-events-dlq", "x")

    response = client.get("/admin/healthz", headers=READ)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == COUNTERS
    assert body == {
        "users": 1,
        "active_connections": 1,
        "raw_events_total": 13,
        "raw_events_unprocessed": 3,
        "raw_events_errored": 2,
        "raw_events_dead_lettered": 2,
        "raw_events_last_hour": 10,
        "daily_summary": 0,
        "activities": 0,
        "sleep_sessions": 0,
        "biomarkers": 0,
        "lab_uploads": 1,
        "raw_events_parked": 1,
        "raw_events_skipped": 4,
        "queue_depth": 3,
        "dlq_depth": 1,
        "ok": True,
    }


@pytest.mark.parametrize(("states", "ok"), [({"received": 101}, False), ({"received": 100, "dead": 20}, True)])
def test_admin_healthz_is_not_ok_when_unprocessed_pile_up(
    client: Client, redis_client: Any, states: dict[str, int], ok: bool
) -> None:
    _ledger(states)
    assert client.get("/admin/healthz", headers=READ).json()["ok"] is ok


def test_admin_healthz_is_not_ok_when_errored_pile_up(client: Client, redis_client: Any) -> None:
    _ledger({"dead": 21})
    response = client.get("/admin/healthz", headers=READ)
    assert (response.status_code, response.json()["ok"], response.json()["raw_events_errored"]) == (200, False, 21)


def test_admin_healthz_without_redis_is_200_not_ok_with_null_depths(client: Client, settings: Any) -> None:
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = client.get("/admin/healthz", headers=READ)
    assert response.status_code == 200
    body = response.json()
    assert (body["ok"], body["queue_depth"], body["dlq_depth"]) == (False, None, None)


def test_admin_healthz_without_the_database_is_503(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def down() -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(services, "ops_counters", down)
    response = client.get("/admin/healthz", headers=READ)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"


# /admin/dlq ---------------------------------------------------------------------------------------


def test_dlq_lists_dead_rows_newest_first_in_pages(client: Client) -> None:
    rows = [dead(n=n) for n in range(5)]
    for age, raw_event in enumerate(reversed(rows)):  # the last one died most recently
        RawEvent.objects.filter(pk=raw_event.pk).update(dead_lettered_at=Now() - timedelta(minutes=age))
    # two died at the same instant: the id breaks the tie
    RawEvent.objects.filter(pk__in=[rows[0].pk, rows[1].pk]).update(dead_lettered_at="2024-05-01T00:00:00Z")
    store(body_of({"type": "daily", "user": {"user_id": "tu"}, "data": [], "n": "not dead"}))

    seen: list[int] = []
    cursor = ""
    pages = 0
    while True:
        response = client.get(f"/admin/dlq?limit=2&cursor={cursor}", headers=READ)
        assert response.status_code == 200
        body = response.json()
        assert len(body["data"]) <= 2
        seen += [row["id"] for row in body["data"]]
        pages += 1
        if body["next_cursor"] is None:
            break
        cursor = body["next_cursor"]

    assert seen == [rows[4].pk, rows[3].pk, rows[2].pk, rows[1].pk, rows[0].pk]
    assert pages == 3
    first = client.get("/admin/dlq?limit=1", headers=READ).json()["data"][0]
    assert set(first) == {
        "id",
        "event_type",
        "terra_user_id",
        "provider",
        "state",
        "process_error",
        "attempts",
        "received_at",
        "dead_lettered_at",
        "request_id",
        "replay_count",
    }
    assert (first["state"], first["process_error"], first["attempts"]) == ("dead", "retries_exhausted: boom", 3)


def test_dlq_lists_parked_rows_on_request(client: Client) -> None:
    dead(n=1)
    parked = dead(n=2)
    RawEvent.objects.filter(pk=parked.pk).update(state=RawEventState.PARKED, dead_lettered_at=None)
    body = client.get("/admin/dlq?state=parked", headers=READ).json()
    assert [row["id"] for row in body["data"]] == [parked.pk]
    assert body["next_cursor"] is None


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=x", "state=processed", "cursor=%%%", "cursor=abc"])
def test_dlq_refuses_bad_parameters(client: Client, query: str) -> None:
    response = client.get(f"/admin/dlq?{query}", headers=READ)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_field"


def test_dlq_accepts_the_largest_page(client: Client) -> None:
    assert client.get("/admin/dlq?limit=500", headers=READ).status_code == 200


# /admin/raw-events/<id> ---------------------------------------------------------------------------


def test_a_raw_event_shows_every_column_and_its_payload_verbatim_and_parsed(client: Client) -> None:
    raw_event = dead()
    body = client.get(f"/admin/raw-events/{raw_event.pk}", headers=READ).json()
    columns = {field.attname for field in RawEvent._meta.concrete_fields}
    assert set(body) == columns | {"payload_json"}
    assert body["payload"] == raw_event.payload
    assert body["payload_json"] == json.loads(raw_event.payload)
    assert (body["id"], body["state"], body["replay_count"]) == (raw_event.pk, "dead", 0)


@pytest.mark.parametrize("payload", ["not json {", None])
def test_payload_json_is_null_when_the_payload_is_not_json(client: Client, payload: str | None) -> None:
    raw_event = dead()
    RawEvent.objects.filter(pk=raw_event.pk).update(payload=payload)
    body = client.get(f"/admin/raw-events/{raw_event.pk}", headers=READ).json()
    assert (body["payload"], body["payload_json"]) == (payload, None)


def test_an_unknown_raw_event_is_404(client: Client) -> None:
    response = client.get("/admin/raw-events/987654321", headers=READ)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "raw_event_not_found"


# /admin/user/<id> ---------------------------------------------------------------------------------


def test_a_user_snapshot_counts_their_rows(client: Client) -> None:
    user = User.objects.create(id="user_snap")
    other = User.objects.create(id="user_other")
    TerraConnection.objects.create(user=user, terra_user_id="tu-snap", provider="OURA")
    DailySummary.objects.create(user=user, provider="OURA", date="2024-05-01")
    DailySummary.objects.create(user=user, provider="OURA", date="2024-05-02")
    DailySummary.objects.create(user=other, provider="OURA", date="2024-05-01")
    LabUpload.objects.create(user=user)
    raw_event = dead()
    RawEvent.objects.filter(pk=raw_event.pk).update(user=user)

    response = client.get("/admin/user/user_snap", headers=READ)

    assert response.status_code == 200
    body = response.json()
    assert body["user"]["id"] == "user_snap"
    assert body["counters"]["daily_summary"] == 2
    assert body["counters"]["lab_uploads"] == 1
    assert body["counters"]["activities"] == 0
    assert body["raw_events"]["dead"] == 1
    assert [(c["terra_user_id"], c["provider"], c["status"]) for c in body["connections"]] == [
        ("tu-snap", "OURA", "active")
    ]


def test_an_unknown_user_is_404(client: Client) -> None:
    response = client.get("/admin/user/nobody", headers=READ)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "user_not_found"
