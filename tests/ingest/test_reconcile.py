"""reconcile_recent: the nightly 7-day backfill request of every active or degraded
connection, against a fake Terra on loopback, and its Beat schedule."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import User
from ingest.models import ConnectionStatus, TerraConnection
from ingest.services.reconcile import RECONCILE_RATE_LIMIT_STREAK, reconcile_recent
from ingest.tasks import reconcile_recent_task
from tests.beat import installed_beat_task
from tests.fake_terra import FakeTerra

pytestmark = pytest.mark.django_db

TYPES = ["activity", "sleep", "daily", "body"]


@pytest.fixture
def terra(fake_terra: FakeTerra, settings) -> Iterator[FakeTerra]:
    settings.TERRA_API_BASE_URL = fake_terra.url
    settings.TERRA_API_CONFIGURED = True
    settings.TERRA_DEV_ID = "test-dev-id"
    settings.TERRA_API_KEY = "test-api-key"
    fake_terra.reset()
    yield fake_terra
    fake_terra.reset()


def connections(*statuses: str) -> list[TerraConnection]:
    user = User.objects.create(id="user_reconcile")
    return [
        TerraConnection.objects.create(user=user, terra_user_id=f"t{i}", provider="OURA", status=status)
        for i, status in enumerate(statuses)
    ]


def requested_users(terra: FakeTerra) -> dict[str, list[str]]:
    by_user: dict[str, list[str]] = {}
    for request in terra.requests:
        by_user.setdefault(request.query["user_id"][0], []).append(request.path.removeprefix("/v2/"))
    return by_user


def test_each_active_or_degraded_connection_is_asked_for_the_last_seven_days(terra: FakeTerra) -> None:
    connections(
        ConnectionStatus.ACTIVE,
        ConnectionStatus.DEGRADED,
        ConnectionStatus.REVOKED,
        ConnectionStatus.DEAUTHORIZED,
        ConnectionStatus.REPLACED,
    )
    result = reconcile_recent()
    assert result.as_dict() == {
        "connections": 2,
        "requested": 2,
        "failed": 0,
        "rate_limited": 0,
        "not_reached": 0,
        "stopped": "",
    }
    assert requested_users(terra) == {"t0": TYPES, "t1": TYPES}
    today = timezone.now().date()
    for request in terra.requests:
        assert request.method == "GET"
        assert request.query["start_date"] == [(today - timedelta(days=7)).isoformat()]
        assert request.query["end_date"] == [today.isoformat()]
        assert request.query["to_webhook"] == ["true"]
        assert (request.headers["dev-id"], request.headers["x-api-key"]) == ("test-dev-id", "test-api-key")


@pytest.mark.parametrize("status", [500, 400, 404])
def test_one_failing_connection_does_not_stop_the_others(terra: FakeTerra, status: int) -> None:
    connections(ConnectionStatus.ACTIVE, ConnectionStatus.ACTIVE, ConnectionStatus.ACTIVE)
    terra.user_status["t1"] = status
    result = reconcile_recent()
    assert (result.requested, result.failed, result.not_reached) == (2, 1, 0)
    by_user = requested_users(terra)
    assert by_user["t0"] == by_user["t2"] == TYPES
    assert by_user["t1"] == ["activity"]  # the rest of a failing connection's types are not tried


def test_one_rate_limited_connection_does_not_stop_the_others(terra: FakeTerra) -> None:
    # Terra's data-read limits are per Terra user.
    connections(ConnectionStatus.ACTIVE, ConnectionStatus.ACTIVE, ConnectionStatus.ACTIVE)
    terra.user_status["t1"] = 429
    result = reconcile_recent()
    assert (result.requested, result.rate_limited, result.not_reached, result.stopped) == (2, 1, 0, "")


def test_consecutive_rate_limits_stop_the_run_early(terra: FakeTerra) -> None:
    connections(*[ConnectionStatus.ACTIVE] * (RECONCILE_RATE_LIMIT_STREAK + 3))
    terra.status = 429
    terra.headers["Retry-After"] = "60"
    result = reconcile_recent()
    assert result.as_dict() == {
        "connections": RECONCILE_RATE_LIMIT_STREAK + 3,
        "requested": 0,
        "failed": 0,
        "rate_limited": RECONCILE_RATE_LIMIT_STREAK,
        "not_reached": 3,
        "stopped": "rate_limited",
    }
    assert len(terra.requests) == RECONCILE_RATE_LIMIT_STREAK


def test_no_connection_is_started_after_the_time_budget(terra: FakeTerra) -> None:
    connections(ConnectionStatus.ACTIVE, ConnectionStatus.ACTIVE, ConnectionStatus.ACTIVE)
    terra.delay = 0.1
    result = reconcile_recent(time_budget=0.3)  # one connection's four requests take 0.4 s
    assert (result.requested, result.not_reached, result.stopped) == (1, 2, "time_budget")
    assert len(requested_users(terra)) == 1


def test_the_run_starts_at_a_different_connection_each_day(terra: FakeTerra) -> None:
    made = connections(*[ConnectionStatus.ACTIVE] * 3)
    reconcile_recent()
    first = terra.requests[0].query["user_id"][0]
    offset = timezone.now().date().toordinal() % 3
    assert first == made[offset].terra_user_id
    assert set(requested_users(terra)) == {c.terra_user_id for c in made}


def test_an_unreachable_terra_fails_each_connection_without_raising(terra: FakeTerra, settings) -> None:
    settings.TERRA_API_BASE_URL = "http://127.0.0.1:1/v2"
    connections(ConnectionStatus.ACTIVE, ConnectionStatus.DEGRADED)
    result = reconcile_recent()
    assert (result.requested, result.failed) == (0, 2)


def test_without_terra_credentials_nothing_is_sent(terra: FakeTerra, settings) -> None:
    settings.TERRA_API_CONFIGURED = False
    connections(ConnectionStatus.ACTIVE)
    result = reconcile_recent()
    assert (result.connections, result.not_reached, result.stopped) == (1, 1, "terra_not_configured")
    assert terra.requests == []


def test_no_connections_is_an_empty_run(terra: FakeTerra) -> None:
    assert reconcile_recent().as_dict()["connections"] == 0
    assert terra.requests == []


def test_the_task_returns_the_summary(terra: FakeTerra) -> None:
    connections(ConnectionStatus.ACTIVE)
    assert reconcile_recent_task.name == "ingest.reconcile_recent"
    summary = reconcile_recent_task.apply().get()
    assert (summary["connections"], summary["requested"]) == (1, 1)


def test_beat_schedules_the_reconcile_nightly() -> None:
    task = installed_beat_task("reconcile_recent")
    assert (task.task, task.queue, task.enabled) == ("ingest.reconcile_recent", "amy", True)
    crontab = task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_week, crontab.day_of_month, crontab.month_of_year) == (
        "0",
        "3",
        "*",
        "*",
        "*",
    )
    assert str(crontab.timezone) == "UTC"
