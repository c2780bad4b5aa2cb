"""GET /v1/me, POST /v1/connect and DELETE /v1/connections/<id> against a fake Terra on
loopback: what is asked of Terra, what is answered, and what changes (or does not) locally."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
from django.core.cache import cache
from django.test import Client

from accounts.models import User
from accounts.tokens import cli_token_issue
from ingest.models import (
    Activity,
    Athlete,
    Biomarker,
    BodyMeasurement,
    ConnectionStatus,
    DailySummary,
    LabUpload,
    MenstruationDay,
    NutritionDaily,
    RawEvent,
    RawEventSource,
    RawEventState,
    SleepSession,
    TerraConnection,
)
from ingest.services.terra_account import CONNECTION_TABLES, connections_refresh_key
from tests.fake_terra import DEFAULT_WIDGET_SESSION, FakeTerra

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.ingest.account_urls")]

USER_ID = "user_account_1"
OTHER_ID = "user_account_2"


@pytest.fixture
def refresh_keys() -> Iterator[None]:
    """No refresh state left from another test (set up before `settings`, so torn down after it)."""
    keys = [connections_refresh_key(USER_ID), connections_refresh_key(OTHER_ID)]
    cache.delete_many(keys)
    yield
    cache.delete_many(keys)


@pytest.fixture
def terra(refresh_keys: None, fake_terra: FakeTerra, settings) -> Iterator[FakeTerra]:
    settings.TERRA_API_BASE_URL = fake_terra.url
    settings.TERRA_API_CONFIGURED = True
    settings.TERRA_DEV_ID = "test-dev-id"
    settings.TERRA_API_KEY = "test-api-key"
    fake_terra.reset()
    yield fake_terra
    fake_terra.reset()


@pytest.fixture
def user() -> User:
    return User.objects.create(id=USER_ID, email="one@example.com")


@pytest.fixture
def other() -> User:
    return User.objects.create(id=OTHER_ID)


class Api:
    def __init__(self, client: Client, user: User) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {cli_token_issue(user=user).token}"}

    def me(self):
        return self.client.get("/v1/me", headers=self.headers)

    def connect(self, body: object = None, path: str = "/v1/connect", raw: str | None = None):
        data = raw if raw is not None else ("" if body is None else json.dumps(body))
        return self.client.post(path, data, content_type="application/json", headers=self.headers)

    def delete(self, connection_id: int, query: str = ""):
        return self.client.delete(f"/v1/connections/{connection_id}{query}", headers=self.headers)


@pytest.fixture
def api(client: Client, user: User) -> Api:
    return Api(client, user)


def connection(user: User, terra_user_id: str, **fields) -> TerraConnection:
    fields.setdefault("provider", "OURA")
    return TerraConnection.objects.create(user=user, terra_user_id=terra_user_id, **fields)


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response["x-amy-request-id"]
    if field is not None:
        assert error["details"] == {"field": field}
    return error


# --- GET /v1/me -----------------------------------------------------------------------------------


def test_me_serves_the_stored_user_and_connections(api: Api, user: User, other: User, terra: FakeTerra) -> None:
    terra.user_info = []
    mine = connection(user, "t1", scopes="SLEEP", last_webhook_at=datetime(2026, 11, 24, 6, tzinfo=UTC))
    connection(other, "t-other")
    response = api.me()
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == {"id": USER_ID, "email": "one@example.com", "created_at": body["user"]["created_at"]}
    assert body["connections"] == [
        {
            "id": mine.pk,
            "terra_user_id": "t1",
            "provider": "OURA",
            "status": "active",
            "connected_at": body["connections"][0]["connected_at"],
            "last_webhook_at": "2026-11-24T06:00:00Z",
        }
    ]
    assert body["connections_stale"] is False


def test_me_refreshes_from_terra_at_most_once_per_five_minutes(api: Api, user: User, terra: FakeTerra) -> None:
    terra.user_info = []
    assert api.me().json()["connections_stale"] is False
    (request,) = terra.requests
    assert (request.method, request.path, request.query) == ("GET", "/v2/userInfo", {"reference_id": [USER_ID]})
    assert (request.headers["dev-id"], request.headers["x-api-key"]) == ("test-dev-id", "test-api-key")
    assert api.me().json()["connections_stale"] is False
    assert len(terra.requests) == 1  # refreshed within 5 minutes: no second call
    cache.delete(connections_refresh_key(USER_ID))  # ... until the 5 minutes are over
    api.me()
    assert len(terra.requests) == 2


def test_a_refresh_updates_the_callers_connections_only(api: Api, user: User, other: User, terra: FakeTerra) -> None:
    mine = connection(user, "t1", provider="OURA", scopes="SLEEP")
    inactive = connection(user, "t2", provider="GARMIN")
    theirs = connection(other, "t-other", provider="FITBIT")
    terra.user_info = {
        "users": [
            {"user_id": "t1", "provider": "OURA", "scopes": "SLEEP,DAILY", "reference_id": USER_ID, "active": True},
            {"user_id": "t2", "provider": "GARMIN", "reference_id": USER_ID, "active": False},
            # Stored for another of our users: never moved, never changed.
            {"user_id": "t-other", "provider": "WHOOP", "reference_id": USER_ID, "active": False},
            # Not stored: the auth webhook creates it, not the refresh.
            {"user_id": "t-new", "provider": "POLAR", "reference_id": USER_ID, "active": True},
            # Another reference id: not this user's.
            {"user_id": "t1", "provider": "EVIL", "reference_id": OTHER_ID},
            "garbage",
        ]
    }
    body = api.me().json()
    assert body["connections_stale"] is False
    assert {c["terra_user_id"]: c["status"] for c in body["connections"]} == {"t1": "active", "t2": "degraded"}
    mine.refresh_from_db()
    inactive.refresh_from_db()
    theirs.refresh_from_db()
    assert (mine.provider, mine.scopes, mine.status) == ("OURA", "SLEEP,DAILY", "active")
    assert inactive.status == ConnectionStatus.DEGRADED
    assert (theirs.user_id, theirs.provider, theirs.status) == (OTHER_ID, "FITBIT", "active")
    assert not TerraConnection.objects.filter(terra_user_id="t-new").exists()


def test_a_refresh_never_revives_an_inactive_connection(api: Api, user: User, terra: FakeTerra) -> None:
    gone = connection(user, "t1", status=ConnectionStatus.DEAUTHORIZED)
    terra.user_info = [{"user_id": "t1", "provider": "OURA", "reference_id": USER_ID, "active": True}]
    api.me()
    gone.refresh_from_db()
    assert gone.status == ConnectionStatus.DEAUTHORIZED


@pytest.mark.parametrize("status", [500, 429, 401])
def test_a_failing_terra_serves_the_stored_connections_as_stale(
    api: Api, user: User, terra: FakeTerra, status: int
) -> None:
    connection(user, "t1")
    terra.path_status["/v2/userInfo"] = status
    body = api.me().json()
    assert body["connections_stale"] is True
    assert [c["terra_user_id"] for c in body["connections"]] == ["t1"]
    # Within the retry window the failure is remembered, without another call to Terra.
    assert api.me().json()["connections_stale"] is True
    assert len(terra.requests) == 1


def test_an_unreadable_terra_answer_is_stale(api: Api, user: User, terra: FakeTerra) -> None:
    terra.user_info = {"status": "success", "something": "else"}
    assert api.me().json()["connections_stale"] is True


def test_a_slow_terra_is_stale_and_the_answer_stays_within_the_budget(api: Api, user: User, terra: FakeTerra) -> None:
    connection(user, "t1")
    terra.user_info = []
    terra.path_delay["/v2/userInfo"] = 8.0
    started = time.monotonic()
    response = api.me()
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["connections_stale"] is True
    assert [c["terra_user_id"] for c in response.json()["connections"]] == ["t1"]
    assert elapsed < 6  # the 2 s budget plus generous slack; the fake would take 8 s


def test_the_refresh_has_one_deadline_for_the_whole_call_not_one_per_phase(
    api: Api, user: User, terra: FakeTerra
) -> None:
    # given: Terra answers its head after 1.5 s and its body 1.5 s later: each phase within 2 s,
    # the whole call past them
    stored = connection(user, "t1")
    terra.user_info = [{"user_id": "t1", "provider": "OURA", "reference_id": USER_ID, "active": False}]
    terra.path_delay["/v2/userInfo"] = 1.5
    terra.path_body_delay["/v2/userInfo"] = 1.5
    # when
    response = api.me()
    # then: the refresh was abandoned at its deadline; the stored connection is served as it was
    assert response.status_code == 200
    assert response.json()["connections_stale"] is True
    stored.refresh_from_db()
    assert stored.status == ConnectionStatus.ACTIVE


def test_without_terra_credentials_me_does_not_refresh(api: Api, user: User, terra: FakeTerra, settings) -> None:
    settings.TERRA_API_CONFIGURED = False
    assert api.me().json()["connections_stale"] is False
    assert terra.requests == []


def test_me_answers_when_the_cache_is_down(api: Api, user: User, terra: FakeTerra, settings) -> None:
    connection(user, "t1")
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        }
    }
    response = api.me()
    assert response.status_code == 200
    assert [c["terra_user_id"] for c in response.json()["connections"]] == ["t1"]
    assert response.json()["connections_stale"] is True  # no refresh could be arranged
    assert terra.requests == []


# --- POST /v1/connect -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/connect", "/v1/sources/terra/connect"])
def test_connect_answers_terras_widget_session_for_the_user(api: Api, user: User, terra: FakeTerra, path: str) -> None:
    response = api.connect({"provider": "OURA", "redirect_url": "https://amy.health/connected"}, path=path)
    assert response.status_code == 200, response.content
    assert response.json() == {
        "widget_url": DEFAULT_WIDGET_SESSION["url"],
        "session_id": DEFAULT_WIDGET_SESSION["session_id"],
        "expires_in": 900,
    }
    (request,) = terra.requests
    assert (request.method, request.path) == ("POST", "/v2/auth/generateWidgetSession")
    assert request.json == {
        "reference_id": USER_ID,
        "providers": "OURA",
        "auth_success_redirect_url": "https://amy.health/connected",
        "auth_failure_redirect_url": "https://amy.health/connected",
    }
    assert (request.headers["dev-id"], request.headers["x-api-key"]) == ("test-dev-id", "test-api-key")


@pytest.mark.parametrize("given", ["oura", "Oura", "OURA", "oUrA"])
def test_connect_accepts_a_provider_name_in_any_case_and_sends_terra_its_upper_case(
    api: Api, user: User, terra: FakeTerra, given: str
) -> None:
    assert api.connect({"provider": given}).status_code == 200
    assert terra.requests[0].json == {"reference_id": USER_ID, "providers": "OURA"}


@pytest.mark.parametrize("raw", ["", "{}", '{"provider": null, "redirect_url": null}'])
def test_connect_without_options_asks_for_every_provider(api: Api, user: User, terra: FakeTerra, raw: str) -> None:
    assert api.connect(raw=raw).status_code == 200
    assert terra.requests[0].json == {"reference_id": USER_ID}


@pytest.mark.parametrize("url", ["http://localhost:8765/callback", "http://127.0.0.1:9/x", "http://[::1]:80/"])
def test_connect_accepts_http_for_loopback_redirects(api: Api, user: User, terra: FakeTerra, url: str) -> None:
    assert api.connect({"redirect_url": url}).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": ""}, "provider"),
        ({"provider": "stra\u00dfe"}, "provider"),
        ({"provider": "OU-RA"}, "provider"),
        ({"provider": "A" * 33}, "provider"),
        ({"provider": 7}, "provider"),
        ({"provider": ["OURA"]}, "provider"),
        ({"redirect_url": "http://amy.health/connected"}, "redirect_url"),
        ({"redirect_url": "http://localhost.evil.com/"}, "redirect_url"),
        ({"redirect_url": "ftp://amy.health/"}, "redirect_url"),
        ({"redirect_url": "javascript:alert(1)"}, "redirect_url"),
        ({"redirect_url": "https://"}, "redirect_url"),
        ({"redirect_url": "https://amy.health:port/"}, "redirect_url"),
        ({"redirect_url": "https://amy.health/a b"}, "redirect_url"),
        ({"redirect_url": "https://amy.health/" + "a" * 2048}, "redirect_url"),
        ({"redirect_url": 1}, "redirect_url"),
    ],
)
def test_connect_refuses_a_bad_field(api: Api, user: User, terra: FakeTerra, body: dict, field: str) -> None:
    assert_error(api.connect(body), 400, "invalid_field", field)
    assert terra.requests == []


@pytest.mark.parametrize("raw", ["[]", '"OURA"', "{not json"])
def test_connect_refuses_a_body_that_is_not_an_object(api: Api, user: User, terra: FakeTerra, raw: str) -> None:
    assert_error(api.connect(raw=raw), 400, "invalid_request")
    assert terra.requests == []


@pytest.mark.parametrize(("status", "expected"), [(500, 502), (503, 502), (400, 502), (401, 502), (403, 502)])
def test_connect_when_terra_fails_is_upstream_unavailable(
    api: Api, user: User, terra: FakeTerra, status: int, expected: int
) -> None:
    terra.path_status["/v2/auth/generateWidgetSession"] = status
    error = assert_error(api.connect({"provider": "OURA"}), expected, "upstream_unavailable")
    assert "test-api-key" not in json.dumps(error)


def test_connect_when_terra_rate_limits_is_503_with_retry_after(api: Api, user: User, terra: FakeTerra) -> None:
    terra.path_status["/v2/auth/generateWidgetSession"] = 429
    terra.headers["Retry-After"] = "30"
    response = api.connect({})
    assert_error(response, 503, "upstream_unavailable")
    assert response["Retry-After"] == "30"


def test_connect_when_terra_is_slow_is_504(api: Api, user: User, terra: FakeTerra, settings) -> None:
    settings.TERRA_API_TIMEOUT_SECONDS = 0.5
    terra.delay = 2.0
    assert_error(api.connect({}), 504, "upstream_unavailable")


def test_connect_when_terra_is_unreachable_is_502(api: Api, user: User, terra: FakeTerra, settings) -> None:
    settings.TERRA_API_BASE_URL = "http://127.0.0.1:1/v2"
    assert_error(api.connect({}), 502, "upstream_unavailable")


def test_connect_when_terra_answers_without_a_session_is_502(api: Api, user: User, terra: FakeTerra) -> None:
    terra.widget_session = {"status": "success"}
    assert_error(api.connect({}), 502, "upstream_unavailable")


def test_connect_without_terra_credentials_is_503(api: Api, user: User, terra: FakeTerra, settings) -> None:
    settings.TERRA_API_CONFIGURED = False
    error = assert_error(api.connect({}), 503, "upstream_unavailable")
    assert "not configured" in error["message"]
    assert terra.requests == []


# --- DELETE /v1/connections/<id> --------------------------------------------------------------------


def typed_rows(user: User, terra_user_id: str, provider: str) -> None:
    common = {"user": user, "terra_user_id": terra_user_id, "provider": provider}
    DailySummary.objects.create(date=date(2026, 11, 24), **common)
    SleepSession.objects.create(summary_id="s1", **common)
    Activity.objects.create(summary_id="a1", **common)
    BodyMeasurement.objects.create(
        measured_at=datetime(2026, 11, 24, tzinfo=UTC), metric="weight_kg", unit="kg", **common
    )
    NutritionDaily.objects.create(date=date(2026, 11, 24), **common)
    MenstruationDay.objects.create(date=date(2026, 11, 24), **common)
    Athlete.objects.create(**common)


def rows_of(user: User, terra_user_id: str) -> int:
    return sum(m.objects.filter(user=user, terra_user_id=terra_user_id).count() for m in CONNECTION_TABLES)


def ledger_row(terra_user_id: str, n: int, **fields) -> RawEvent:
    payload = json.dumps({"type": "daily", "user": {"user_id": terra_user_id}, "n": n})
    fields.setdefault("state", RawEventState.PROCESSED)
    return RawEvent.objects.create(
        event_type="daily", terra_user_id=terra_user_id, payload=payload, dedup_key=f"{terra_user_id}-{n}", **fields
    )


def test_delete_deauthorizes_at_terra_and_marks_the_connection(api: Api, user: User, terra: FakeTerra) -> None:
    conn = connection(user, "t1")
    typed_rows(user, "t1", "OURA")
    event = ledger_row("t1", 1, user=user)
    response = api.delete(conn.pk)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body == {
        "id": conn.pk,
        "terra_user_id": "t1",
        "provider": "OURA",
        "status": "deauthorized",
        "connected_at": body["connected_at"],
        "last_webhook_at": None,
    }
    (request,) = terra.requests
    assert (request.method, request.path, request.query) == (
        "DELETE",
        "/v2/auth/deauthenticateUser",
        {"user_id": ["t1"]},
    )
    conn.refresh_from_db()
    assert conn.status == ConnectionStatus.DEAUTHORIZED
    assert conn.disconnected_at is not None
    assert rows_of(user, "t1") == 7  # without erase, the data stays
    event.refresh_from_db()
    assert event.payload is not None


def test_delete_of_another_users_connection_is_identical_to_an_unknown_one(
    api: Api, user: User, other: User, terra: FakeTerra
) -> None:
    theirs = connection(other, "t-other")
    unknown = api.delete(theirs.pk + 1000)
    foreign = api.delete(theirs.pk, "?erase=true")
    for response in (unknown, foreign):
        assert_error(response, 404, "connection_not_found")
    strip = lambda r: {k: v for k, v in r.json()["error"].items() if k != "request_id"}  # noqa: E731
    assert strip(unknown) == strip(foreign)
    assert terra.requests == []
    theirs.refresh_from_db()
    assert theirs.status == ConnectionStatus.ACTIVE


def test_delete_of_an_id_beyond_any_integer_is_not_found(api: Api, user: User, terra: FakeTerra) -> None:
    assert_error(api.delete(10**30), 404, "connection_not_found")


def test_delete_when_terra_no_longer_knows_the_user_goes_on(api: Api, user: User, terra: FakeTerra) -> None:
    conn = connection(user, "t1")
    terra.path_status["/v2/auth/deauthenticateUser"] = 404
    assert api.delete(conn.pk).json()["status"] == "deauthorized"


@pytest.mark.parametrize(
    ("status", "delay", "expected"), [(500, 0.0, 502), (429, 0.0, 503), (403, 0.0, 502), (200, 2.0, 504)]
)
def test_delete_when_terra_fails_changes_nothing(
    api: Api, user: User, terra: FakeTerra, settings, status: int, delay: float, expected: int
) -> None:
    settings.TERRA_API_TIMEOUT_SECONDS = 0.5
    conn = connection(user, "t1")
    typed_rows(user, "t1", "OURA")
    event = ledger_row("t1", 1, user=user)
    terra.path_status["/v2/auth/deauthenticateUser"] = status
    terra.delay = delay
    assert_error(api.delete(conn.pk, "?erase=true"), expected, "upstream_unavailable")
    conn.refresh_from_db()
    event.refresh_from_db()
    assert (conn.status, conn.disconnected_at) == (ConnectionStatus.ACTIVE, None)
    assert rows_of(user, "t1") == 7
    assert event.payload is not None


def test_delete_with_erase_removes_only_that_connections_data(
    api: Api, user: User, other: User, terra: FakeTerra
) -> None:
    conn = connection(user, "t1", provider="OURA")
    connection(user, "t2", provider="GARMIN")
    typed_rows(user, "t1", "OURA")
    typed_rows(user, "t2", "GARMIN")
    typed_rows(other, "t1", "OURA")  # another user's rows naming the same Terra user (an import)
    lab = LabUpload.objects.create(user=user)
    Biomarker.objects.create(user=user, lab_upload=lab, code="hba1c")
    erased = [ledger_row("t1", 1, user=user), ledger_row("t1", 2)]
    waiting = ledger_row("t1", 3, state=RawEventState.RECEIVED)
    kept = [
        ledger_row("t2", 4, user=user),
        ledger_row("t1", 5, user=other, source=RawEventSource.IMPORT),
    ]

    response = api.delete(conn.pk, "?erase=true")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "deauthorized"

    assert rows_of(user, "t1") == 0
    assert rows_of(user, "t2") == 7
    assert rows_of(other, "t1") == 7
    assert Biomarker.objects.filter(user=user).count() == 1
    for row in [*erased, waiting]:
        row.refresh_from_db()
        assert row.payload is None  # a tombstone: the row stays, its body is gone
    assert (waiting.state, waiting.process_error) == (RawEventState.SKIPPED, "skipped:connection_inactive")
    assert erased[0].state == RawEventState.PROCESSED
    for row in kept:
        row.refresh_from_db()
        assert row.payload is not None


@pytest.mark.parametrize("query", ["?erase=yes", "?erase=1", "?erase=TRUE", "?erase="])
def test_delete_with_a_bad_erase_flag_is_invalid_field(api: Api, user: User, terra: FakeTerra, query: str) -> None:
    conn = connection(user, "t1")
    assert_error(api.delete(conn.pk, query), 400, "invalid_field", "erase")
    assert terra.requests == []
    conn.refresh_from_db()
    assert conn.status == ConnectionStatus.ACTIVE


def test_delete_with_erase_false_keeps_the_data(api: Api, user: User, terra: FakeTerra) -> None:
    conn = connection(user, "t1")
    typed_rows(user, "t1", "OURA")
    assert api.delete(conn.pk, "?erase=false").status_code == 200
    assert rows_of(user, "t1") == 7


def test_deleting_a_deauthorized_connection_again_does_not_call_terra(
    api: Api, user: User, terra: FakeTerra, settings
) -> None:
    settings.TERRA_API_CONFIGURED = False  # not needed: Terra has nothing left to do
    disconnected_at = datetime(2026, 11, 1, tzinfo=UTC)
    conn = connection(user, "t1", status=ConnectionStatus.DEAUTHORIZED, disconnected_at=disconnected_at)
    typed_rows(user, "t1", "OURA")
    response = api.delete(conn.pk, "?erase=true")
    assert response.status_code == 200
    assert terra.requests == []
    assert rows_of(user, "t1") == 0
    conn.refresh_from_db()
    assert conn.disconnected_at == disconnected_at


@pytest.mark.parametrize("status", [ConnectionStatus.REVOKED, ConnectionStatus.REPLACED, ConnectionStatus.DEGRADED])
def test_deleting_a_connection_in_another_state_deauthorizes_it(
    api: Api, user: User, terra: FakeTerra, status: str
) -> None:
    conn = connection(user, "t1", status=status)
    assert api.delete(conn.pk).json()["status"] == "deauthorized"
    assert len(terra.requests_to("/v2/auth/deauthenticateUser", "DELETE")) == 1


def test_delete_without_terra_credentials_is_503(api: Api, user: User, terra: FakeTerra, settings) -> None:
    settings.TERRA_API_CONFIGURED = False
    conn = connection(user, "t1")
    assert_error(api.delete(conn.pk), 503, "upstream_unavailable")
    conn.refresh_from_db()
    assert conn.status == ConnectionStatus.ACTIVE
