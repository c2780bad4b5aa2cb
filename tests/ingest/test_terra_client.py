"""The Terra REST client against a fake Terra over loopback HTTP: requests, errors, backfills."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from django.utils import timezone

from accounts.models import User
from ingest.models import ConnectionStatus, TerraConnection
from ingest.services.backfill import connection_backfill
from ingest.terra_client import TerraClient, TerraRejected, TerraUnavailable
from tests.fake_terra import FakeTerra

DAY = date(2026, 11, 24)


@pytest.fixture
def terra(fake_terra: FakeTerra) -> Iterator[FakeTerra]:
    fake_terra.reset()
    yield fake_terra
    fake_terra.reset()


def client(terra: FakeTerra, timeout: float = 2) -> TerraClient:
    return TerraClient(base_url=terra.url, dev_id="dev", api_key="key", timeout=timeout)


def test_a_backfill_request_sends_the_dates_and_credentials(terra: FakeTerra) -> None:
    with client(terra) as terra_client:
        terra_client.request_backfill(
            data_type="sleep", terra_user_id="t1", start=date(2026, 11, 1), end=date(2026, 11, 8)
        )
    (request,) = terra.requests
    assert request.path == "/v2/sleep"
    assert request.query == {
        "user_id": ["t1"],
        "start_date": ["2026-11-01"],
        "end_date": ["2026-11-08"],
        "to_webhook": ["true"],
    }
    assert (request.headers["dev-id"], request.headers["x-api-key"]) == ("dev", "key")


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_429_and_5xx_are_transient(terra: FakeTerra, status: int) -> None:
    terra.status = status
    with client(terra) as terra_client, pytest.raises(TerraUnavailable):
        terra_client.request_backfill(data_type="sleep", terra_user_id="t1", start=DAY, end=DAY)


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_other_4xx_are_permanent(terra: FakeTerra, status: int) -> None:
    terra.status = status
    with client(terra) as terra_client, pytest.raises(TerraRejected) as caught:
        terra_client.request_backfill(data_type="sleep", terra_user_id="t1", start=DAY, end=DAY)
    assert caught.value.status == status
    assert "key" not in str(caught.value)


def test_a_slow_terra_times_out_as_transient(terra: FakeTerra) -> None:
    terra.delay = 1.0
    with client(terra, timeout=0.2) as terra_client, pytest.raises(TerraUnavailable):
        terra_client.request_backfill(data_type="sleep", terra_user_id="t1", start=DAY, end=DAY)


def test_an_unreachable_terra_is_transient() -> None:
    terra_client = TerraClient(base_url="http://127.0.0.1:1", dev_id="d", api_key="k", timeout=1)
    with terra_client, pytest.raises(TerraUnavailable):
        terra_client.request_backfill(data_type="sleep", terra_user_id="t1", start=DAY, end=DAY)


def test_a_deadline_bounds_the_whole_call_when_each_phase_is_within_the_timeout(terra: FakeTerra) -> None:
    # given: the answer's head after 0.6 s and its body 0.6 s later; each phase within 1 s
    terra.user_info = [{"user_id": "t1"}]
    terra.path_delay["/v2/userInfo"] = 0.6
    terra.path_body_delay["/v2/userInfo"] = 0.6
    # then: a 1 s timeout per phase lets it through, a 1 s deadline does not
    with client(terra, timeout=1) as terra_client:
        assert terra_client.user_info("user_1", timeout=1) == [{"user_id": "t1"}]
        with pytest.raises(TerraUnavailable) as caught:
            terra_client.user_info("user_1", deadline=1)
    assert caught.value.timed_out


def test_within_its_deadline_a_call_answers_and_its_errors_are_the_usual_ones(terra: FakeTerra) -> None:
    terra.user_info = [{"user_id": "t1"}]
    with client(terra) as terra_client:
        assert terra_client.user_info("user_1", deadline=2) == [{"user_id": "t1"}]
        terra.status = 503
        with pytest.raises(TerraUnavailable) as caught:
            terra_client.user_info("user_1", deadline=2)
    assert (caught.value.status, caught.value.timed_out) == (503, False)
    unreachable = TerraClient(base_url="http://127.0.0.1:1", dev_id="d", api_key="k")
    with unreachable, pytest.raises(TerraUnavailable):
        unreachable.user_info("user_1", deadline=1)


@pytest.mark.django_db
def test_a_connection_backfill_asks_for_each_type_over_the_last_days(terra: FakeTerra, settings) -> None:
    settings.TERRA_API_CONFIGURED = True
    connection = TerraConnection.objects.create(user=User.objects.create(id="u1"), terra_user_id="t1")
    assert connection_backfill(connection_id=connection.pk, days=28, client=client(terra)) == [
        "activity",
        "sleep",
        "daily",
        "body",
    ]
    today = timezone.now().date()
    assert [r.path for r in terra.requests] == ["/v2/activity", "/v2/sleep", "/v2/daily", "/v2/body"]
    assert {r.query["start_date"][0] for r in terra.requests} == {(today - timedelta(days=28)).isoformat()}
    assert {r.query["end_date"][0] for r in terra.requests} == {today.isoformat()}


@pytest.mark.django_db
@pytest.mark.parametrize("status", [ConnectionStatus.DEAUTHORIZED, ConnectionStatus.REVOKED, ConnectionStatus.REPLACED])
def test_an_inactive_connection_is_not_backfilled(terra: FakeTerra, settings, status: str) -> None:
    settings.TERRA_API_CONFIGURED = True
    connection = TerraConnection.objects.create(user=User.objects.create(id="u1"), terra_user_id="t1", status=status)
    assert connection_backfill(connection_id=connection.pk, days=28, client=client(terra)) == []
    assert terra.requests == []


@pytest.mark.django_db
def test_without_terra_credentials_nothing_is_sent(terra: FakeTerra, settings) -> None:
    settings.TERRA_API_CONFIGURED = False
    connection = TerraConnection.objects.create(user=User.objects.create(id="u1"), terra_user_id="t1")
    assert connection_backfill(connection_id=connection.pk, days=28, client=client(terra)) == []
    assert terra.requests == []


def test_subscriptions_reads_every_page(terra: FakeTerra) -> None:
    with client(terra) as terra_client:
        users = terra_client.subscriptions()
    assert [u["user_id"] for u in users] == ["t0", "t1", "t2", "t3"]
    assert [r.query["page"] for r in terra.requests] == [["0"], ["1"]]


def test_a_lab_report_is_submitted_as_multipart_with_our_reference(terra: FakeTerra) -> None:
    with client(terra) as terra_client:
        answer = terra_client.submit_lab_report(
            reference_id="u1", filename="report.pdf", content=b"%PDF-1.7 test", content_type="application/pdf"
        )
    (request,) = terra.requests
    assert (request.method, request.path, request.query) == ("POST", "/v2/lab-reports", {"reference_id": ["u1"]})
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert b'name="file"; filename="report.pdf"' in request.body
    assert b"%PDF-1.7 test" in request.body
    assert answer["upload_id"].startswith("upl_")
