"""CLI login by device flow, and logout; the per-IP rate limit on it."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import jwt
import pytest
from django.core.cache import cache
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import accounts.device_login
from accounts.models import CliToken, DeviceLogin, User
from accounts.throttles import DeviceStartRateThrottle, DeviceTokenRateThrottle
from accounts.tokens import cli_token_issue
from tests.fake_clerk import FakeClerk

pytestmark = [pytest.mark.django_db, pytest.mark.urls("accounts.urls")]

USER_CODE = re.compile(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}")


@pytest.fixture
def client_ip() -> Iterator[str]:
    """A client address of this test's own (documentation range), so rate-limit counts never leak
    between tests; its counters are deleted afterwards."""
    # Written as PostgreSQL and Django write it back (no leading zeros), so comparisons hold.
    address = str(ipaddress.ip_address(f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"))
    yield address
    for throttle in (DeviceStartRateThrottle, DeviceTokenRateThrottle):
        cache.delete(throttle.cache_format % {"scope": throttle.scope, "ident": address})


@pytest.fixture
def api(client_ip: str) -> Client:
    return Client(REMOTE_ADDR=client_ip)


@pytest.fixture
def no_poll_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts.device_login, "POLL_INTERVAL_SECONDS", 0)


def post(client: Client, path: str, body: dict | None = None, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post(path, body if body is not None else {}, content_type="application/json", headers=headers)


def start(client: Client) -> dict:
    response = post(client, "/v1/auth/device")
    assert response.status_code == 200
    return response.json()


def poll(client: Client, device_code: str):
    return post(client, "/v1/auth/token", {"device_code": device_code})


def approve(client: Client, user_code: str, token: str):
    """The approval as the page sends it once the person ticked that the codes match."""
    return post(client, "/v1/auth/cli-approve", {"user_code": user_code, "confirmed": True}, token=token)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response["x-amy-request-id"]
    return error


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# --- the whole flow ------------------------------------------------------------------------------


def test_the_whole_flow_ends_with_one_cli_token_for_the_approving_user(
    api: Client, fake_clerk: FakeClerk, no_poll_interval: None
) -> None:
    # given: the CLI starts a login
    started = start(api)
    assert set(started) == {"device_code", "user_code", "verification_url", "expires_in", "interval"}
    assert USER_CODE.fullmatch(started["user_code"])
    assert len(started["device_code"]) >= 43  # 32 random bytes, URL-safe base64
    assert started["verification_url"] == f"http://testserver/cli/login?code={started['user_code']}"
    assert (started["expires_in"], started["interval"]) == (600, 0)
    # and polls before anyone approved
    assert_error(poll(api, started["device_code"]), 400, "authorization_pending")

    # when: the person signs in with Clerk and approves the code
    response = approve(api, started["user_code"], fake_clerk.token("user_clerk_7"))
    assert response.status_code == 200
    assert response.json() == {"ok": True}

    # then: the next poll gets a CLI token for that user
    response = poll(api, started["device_code"])
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "token_type", "expires_at", "user_id"}
    assert (body["token_type"], body["user_id"]) == ("Bearer", "user_clerk_7")
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["sub"] == "user_clerk_7"
    token_row = CliToken.objects.get()
    assert (token_row.jti, token_row.user_id) == (claims["jti"], "user_clerk_7")
    assert timezone.datetime.fromisoformat(body["expires_at"]) == token_row.expires_at
    login = DeviceLogin.objects.get()
    assert login.approved_by_id == "user_clerk_7"
    assert login.consumed_at is not None
    assert response["Cache-Control"] == "no-store"


def test_the_device_code_is_single_use(api: Client, fake_clerk: FakeClerk, no_poll_interval: None) -> None:
    started = start(api)
    approve(api, started["user_code"], fake_clerk.token())
    assert poll(api, started["device_code"]).status_code == 200
    # when / then
    assert_error(poll(api, started["device_code"]), 400, "invalid_grant")
    assert CliToken.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_exchanges_get_exactly_one_token(
    fake_clerk: FakeClerk, no_poll_interval: None, monkeypatch: pytest.MonkeyPatch, client_ip: str
) -> None:
    # given: an approved login
    client = Client(REMOTE_ADDR=client_ip)
    started = start(client)
    approve(client, started["user_code"], fake_clerk.token())
    # and minting that takes a while, so both exchanges are in flight at once: an exchange that
    # checked consumed_at and then set it would let both through
    issue = accounts.device_login.cli_token_issue

    def slow_issue(**kwargs):
        time.sleep(0.3)
        return issue(**kwargs)

    monkeypatch.setattr(accounts.device_login, "cli_token_issue", slow_issue)
    barrier = threading.Barrier(2)
    responses = []

    def exchange() -> None:
        try:
            barrier.wait()
            responses.append(poll(Client(REMOTE_ADDR=client_ip), started["device_code"]))
        finally:
            connections.close_all()

    # when
    threads = [threading.Thread(target=exchange) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    # then
    assert sorted(response.status_code for response in responses) == [200, 400]
    refused = next(response for response in responses if response.status_code == 400)
    assert refused.json()["error"]["code"] == "invalid_grant"
    assert CliToken.objects.count() == 1


def test_polling_faster_than_the_interval_is_slow_down(api: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts.device_login, "POLL_INTERVAL_SECONDS", 60)
    started = start(api)
    assert started["interval"] == 60
    assert_error(poll(api, started["device_code"]), 400, "authorization_pending")
    # when: polled again right away
    assert_error(poll(api, started["device_code"]), 400, "slow_down")
    assert_error(poll(api, started["device_code"]), 400, "slow_down")
    # then: once the interval has passed since the last counted poll, it is pending again
    DeviceLogin.objects.update(last_polled_at=timezone.now() - timedelta(seconds=61))
    assert_error(poll(api, started["device_code"]), 400, "authorization_pending")


def test_polling_at_the_interval_stays_pending(api: Client, no_poll_interval: None) -> None:
    started = start(api)
    for _ in range(3):
        assert_error(poll(api, started["device_code"]), 400, "authorization_pending")


def test_an_approved_login_is_not_slowed_down(
    api: Client, fake_clerk: FakeClerk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # slow_down is a kind of "pending" (RFC 8628 §3.5): once approved, the next poll gets the token
    monkeypatch.setattr(accounts.device_login, "POLL_INTERVAL_SECONDS", 60)
    started = start(api)
    assert_error(poll(api, started["device_code"]), 400, "authorization_pending")
    approve(api, started["user_code"], fake_clerk.token())
    assert poll(api, started["device_code"]).status_code == 200


def test_an_expired_login_is_expired_token_and_cannot_be_approved(api: Client, fake_clerk: FakeClerk) -> None:
    started = start(api)
    DeviceLogin.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_error(poll(api, started["device_code"]), 400, "expired_token")
    assert_error(approve(api, started["user_code"], fake_clerk.token()), 400, "invalid_grant")
    assert DeviceLogin.objects.get().approved_by_id is None


def test_a_login_approved_then_expired_gives_no_token(
    api: Client, fake_clerk: FakeClerk, no_poll_interval: None
) -> None:
    started = start(api)
    approve(api, started["user_code"], fake_clerk.token())
    DeviceLogin.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_error(poll(api, started["device_code"]), 400, "expired_token")
    assert not CliToken.objects.exists()


def test_an_unknown_device_code_is_invalid_grant(api: Client) -> None:
    assert_error(poll(api, "not-a-device-code"), 400, "invalid_grant")


@pytest.mark.parametrize("body", [{}, {"device_code": ""}, {"device_code": "x" * 129}])
def test_a_missing_or_bad_device_code_is_invalid_field(api: Client, body: dict) -> None:
    error = assert_error(post(api, "/v1/auth/token", body), 400, "invalid_field")
    assert error["details"] == {"field": "device_code"}


def test_a_body_that_is_not_an_object_is_invalid_request(api: Client) -> None:
    response = api.post("/v1/auth/token", "[1, 2]", content_type="application/json")
    assert_error(response, 400, "invalid_request")


# --- approving -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "retype", [str.lower, lambda code: code.replace("-", ""), lambda code: f" {code[:4]} {code[5:]} "]
)
def test_the_user_code_is_accepted_in_any_case_with_or_without_the_dash(
    api: Client, fake_clerk: FakeClerk, retype
) -> None:
    started = start(api)
    assert approve(api, retype(started["user_code"]), fake_clerk.token("user_clerk_7")).json() == {"ok": True}
    assert DeviceLogin.objects.get().approved_by_id == "user_clerk_7"


@pytest.mark.parametrize("user_code", ["BCDF-GHJK", "AAAA-AAAA", "BCDF-GHJ", "<script>"])
def test_an_unknown_user_code_is_invalid_grant(api: Client, fake_clerk: FakeClerk, user_code: str) -> None:
    start(api)
    assert_error(approve(api, user_code, fake_clerk.token()), 400, "invalid_grant")
    assert DeviceLogin.objects.get().approved_by_id is None


@pytest.mark.parametrize("body", [{}, {"user_code": ""}, {"user_code": "   "}])
def test_a_missing_or_blank_user_code_is_invalid_field(api: Client, fake_clerk: FakeClerk, body: dict) -> None:
    error = assert_error(post(api, "/v1/auth/cli-approve", body, token=fake_clerk.token()), 400, "invalid_field")
    assert error["details"] == {"field": "user_code"}


def test_approving_twice_as_the_same_user_is_ok(api: Client, fake_clerk: FakeClerk) -> None:
    started = start(api)
    token = fake_clerk.token("user_clerk_7")
    assert approve(api, started["user_code"], token).json() == {"ok": True}
    assert approve(api, started["user_code"], token).json() == {"ok": True}  # e.g. a reloaded page


def test_a_login_approved_by_one_user_cannot_be_taken_by_another(
    api: Client, fake_clerk: FakeClerk, no_poll_interval: None
) -> None:
    started = start(api)
    approve(api, started["user_code"], fake_clerk.token("user_clerk_7"))
    assert_error(approve(api, started["user_code"], fake_clerk.token("user_clerk_8")), 400, "invalid_grant")
    assert poll(api, started["device_code"]).json()["user_id"] == "user_clerk_7"


def test_a_used_user_code_cannot_be_approved_again(api: Client, fake_clerk: FakeClerk, no_poll_interval: None) -> None:
    started = start(api)
    token = fake_clerk.token("user_clerk_7")
    approve(api, started["user_code"], token)
    poll(api, started["device_code"])
    assert_error(approve(api, started["user_code"], token), 400, "invalid_grant")


def test_a_cli_token_cannot_approve(api: Client) -> None:
    started = start(api)
    cli_token = cli_token_issue(user=User.objects.create(id="user_cli_1")).token
    error = assert_error(approve(api, started["user_code"], cli_token), 403, "forbidden")
    assert "CLI token" in error["message"]
    assert DeviceLogin.objects.get().approved_by_id is None


def test_approving_without_a_token_is_missing_authorization(api: Client) -> None:
    started = start(api)
    assert_error(post(api, "/v1/auth/cli-approve", {"user_code": started["user_code"]}), 401, "missing_authorization")
    assert DeviceLogin.objects.get().approved_by_id is None


def test_approving_with_a_bad_token_is_invalid_token(api: Client, fake_clerk: FakeClerk) -> None:
    started = start(api)
    expired = fake_clerk.token(exp=int(time.time()) - 60)
    assert_error(approve(api, started["user_code"], expired), 401, "invalid_token")


# --- storage -------------------------------------------------------------------------------------


def test_codes_are_stored_only_as_sha256_digests(api: Client, fake_clerk: FakeClerk) -> None:
    started = start(api)
    approve(api, started["user_code"], fake_clerk.token())
    login = DeviceLogin.objects.get()
    assert login.device_code_hash == sha256(started["device_code"])
    assert login.user_code_hash == sha256(started["user_code"].replace("-", ""))
    with connection.cursor() as cursor:
        cursor.execute("SELECT row_to_json(d)::text FROM device_logins d")
        (row,) = cursor.fetchone()
    for raw in (started["device_code"], started["user_code"], started["user_code"].replace("-", "")):
        assert raw not in row
        assert raw.lower() not in row.lower()


def test_a_login_lives_for_ten_minutes(api: Client) -> None:
    before = timezone.now()
    start(api)
    login = DeviceLogin.objects.get()
    assert before <= login.created_at <= timezone.now()
    assert login.expires_at - login.created_at == timedelta(seconds=600)


def test_expired_logins_can_be_purged(api: Client) -> None:
    start(api)
    start(api)
    DeviceLogin.objects.filter(pk=DeviceLogin.objects.order_by("pk").first().pk).update(
        expires_at=timezone.now() - timedelta(days=2)
    )
    deleted = accounts.device_login.device_login_purge_expired(expired_before=timezone.now() - timedelta(days=1))
    assert deleted == 1
    assert DeviceLogin.objects.count() == 1


# --- logout --------------------------------------------------------------------------------------


def test_the_minted_token_works_until_logout_revokes_it(
    api: Client, fake_clerk: FakeClerk, no_poll_interval: None
) -> None:
    # given: a token from the device flow
    started = start(api)
    approve(api, started["user_code"], fake_clerk.token("user_clerk_7"))
    token = poll(api, started["device_code"]).json()["token"]
    # when: the CLI logs out with it
    response = post(api, "/v1/auth/logout", token=token)
    # then
    assert response.status_code == 204
    assert response.content == b""
    assert CliToken.objects.get().revoked_at is not None
    assert_error(post(api, "/v1/auth/logout", token=token), 401, "invalid_token")


def test_logout_revokes_only_the_presented_token(api: Client) -> None:
    user = User.objects.create(id="user_cli_1")
    first, second = cli_token_issue(user=user), cli_token_issue(user=user)
    assert post(api, "/v1/auth/logout", token=first.token).status_code == 204
    assert post(api, "/v1/auth/logout", token=second.token).status_code == 204
    assert_error(post(api, "/v1/auth/logout", token=first.token), 401, "invalid_token")


def test_logout_with_a_token_without_jti_answers_204_and_cannot_revoke_it(api: Client, settings) -> None:
    now = int(time.time())
    legacy = jwt.encode({"sub": "user_legacy", "iat": now, "exp": now + 3600, "v": 1}, settings.AMY_JWT_SECRET)
    assert post(api, "/v1/auth/logout", token=legacy).status_code == 204
    assert post(api, "/v1/auth/logout", token=legacy).status_code == 204  # still valid until it expires


def test_logout_with_a_clerk_token_answers_204_and_revokes_nothing(api: Client, fake_clerk: FakeClerk) -> None:
    cli_token_issue(user=User.objects.create(id="user_clerk_1"))
    assert post(api, "/v1/auth/logout", token=fake_clerk.token("user_clerk_1")).status_code == 204
    assert CliToken.objects.get().revoked_at is None


def test_logout_without_a_token_is_missing_authorization(api: Client) -> None:
    assert_error(post(api, "/v1/auth/logout"), 401, "missing_authorization")


# --- the browser page ----------------------------------------------------------------------------


def encoded_publishable_key(host: str) -> str:
    return "pk_test_" + base64.b64encode(f"{host}$".encode()).decode().rstrip("=")


def test_the_login_page_loads_clerk_from_the_keys_frontend_api(api: Client, settings) -> None:
    settings.CLERK_PUBLISHABLE_KEY = encoded_publishable_key("clerk.amy.example")
    response = api.get("/cli/login", {"code": "bcdfghjk"})
    assert response.status_code == 200
    assert response["content-type"].startswith("text/html")
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    assert "BCDF-GHJK" in html  # shown as the terminal shows it
    assert 'src="https://clerk.amy.example/npm/@clerk/clerk-js@5/dist/clerk.browser.js"' in html
    assert f'data-clerk-publishable-key="{settings.CLERK_PUBLISHABLE_KEY}"' in html
    assert '"approveUrl": "/v1/auth/cli-approve"' in html
    assert '"userCode": "BCDF-GHJK"' in html


def test_the_login_page_escapes_the_code(api: Client, settings) -> None:
    settings.CLERK_PUBLISHABLE_KEY = encoded_publishable_key("clerk.amy.example")
    response = api.get("/cli/login", {"code": '</script><script>alert("x")</script>'})
    html = response.content.decode()
    assert response.status_code == 200
    assert "<script>alert" not in html
    assert "&lt;/script&gt;&lt;script&gt;alert(&quot;x&quot;)" in html  # in the page text
    assert "\\u003C/script\\u003E\\u003Cscript\\u003Ealert" in html  # in the JSON for the script


@pytest.mark.parametrize(
    "key",
    ["", "sk_test_abc", "pk_test_!!!", "pk_test_" + base64.b64encode(b'evil.example/x.js?"$').decode()],
)
def test_the_login_page_loads_no_clerk_script_without_a_valid_publishable_key(api: Client, settings, key: str) -> None:
    settings.CLERK_PUBLISHABLE_KEY = key
    html = api.get("/cli/login", {"code": "BCDF-GHJK"}).content.decode()
    assert "clerk.browser.js" not in html


def test_the_login_page_without_a_code_says_how_to_get_one(api: Client) -> None:
    response = api.get("/cli/login")
    assert response.status_code == 200
    assert "amy login" in response.content.decode()


def test_the_login_page_is_get_only(api: Client) -> None:
    assert api.post("/cli/login").status_code == 405


# --- rate limits ---------------------------------------------------------------------------------


def test_the_device_endpoint_allows_30_calls_a_minute_per_ip(api: Client) -> None:
    for _ in range(30):
        assert post(api, "/v1/auth/device").status_code == 200
    # when: the 31st call within the minute
    response = post(api, "/v1/auth/device")
    # then
    assert_error(response, 429, "rate_limit_exceeded")
    assert 1 <= int(response["Retry-After"]) <= 61
    assert DeviceLogin.objects.count() == 30
    # and another client is not affected
    other = Client(REMOTE_ADDR="2001:db8::ffff:1")
    try:
        assert post(other, "/v1/auth/device").status_code == 200
    finally:
        cache.delete(DeviceStartRateThrottle.cache_format % {"scope": "auth_device", "ident": "2001:db8::ffff:1"})


def test_the_token_endpoint_has_its_own_limit_from_the_setting(api: Client, settings) -> None:
    settings.AMY_AUTH_RATE_PER_MINUTE = 3
    started = start(api)  # counted against /v1/auth/device, not /v1/auth/token
    for _ in range(3):
        assert poll(api, started["device_code"]).status_code == 400
    response = poll(api, started["device_code"])
    assert_error(response, 429, "rate_limit_exceeded")
    assert "Retry-After" in response


def test_a_forwarded_for_header_does_not_dodge_the_limit(api: Client, settings) -> None:
    # Without NUM_PROXIES configured, X-Forwarded-For is the client's own word.
    settings.AMY_AUTH_RATE_PER_MINUTE = 2
    responses = [
        api.post(
            "/v1/auth/device", content_type="application/json", headers={"X-Forwarded-For": f"198.51.100.{number}"}
        )
        for number in range(3)
    ]
    assert [response.status_code for response in responses] == [200, 200, 429]


def test_the_purge_of_expired_logins_runs_daily_on_beat() -> None:
    from accounts.tasks import purge_expired_device_logins
    from tests.beat import installed_beat_task

    task = installed_beat_task("purge_expired_device_logins")
    assert (task.task, task.queue, task.enabled) == ("accounts.purge_expired_device_logins", "amy", True)
    assert (task.crontab.minute, task.crontab.hour) == ("0", "4")
    assert purge_expired_device_logins.name == task.task


# --- phishing resistance: what the approver sees and must confirm ------------------------------------


def test_approval_without_the_confirmation_is_refused_and_approves_nothing(
    api: Client, fake_clerk: FakeClerk, no_poll_interval: None
) -> None:
    started = start(api)
    for body in ({"user_code": started["user_code"]}, {"user_code": started["user_code"], "confirmed": False}):
        response = post(api, "/v1/auth/cli-approve", body, token=fake_clerk.token())
        error = assert_error(response, 400, "confirmation_required")
        assert error["details"] == {"field": "confirmed"}
    assert DeviceLogin.objects.get().approved_at is None
    assert_error(poll(api, started["device_code"]), 400, "authorization_pending")


def test_the_approval_page_shows_when_from_where_and_which_client_asked(api: Client, client_ip: str) -> None:
    response = post(api, "/v1/auth/device", {"client_name": "amy-cli", "client_version": "0.9.1"})
    started = response.json()
    login = DeviceLogin.objects.get()
    assert (login.requested_ip, login.client_name, login.client_version) == (client_ip, "amy-cli", "0.9.1")

    html = api.get("/cli/login", {"code": started["user_code"]}).content.decode()

    assert f"{login.created_at:%Y-%m-%d %H:%M:%S} UTC" in html
    assert client_ip in html
    assert "amy-cli 0.9.1" in html
    assert 'id="confirm"' in html  # the confirmation to tick
    assert '"pending": true' in html


def test_the_client_is_read_from_the_user_agent_when_the_body_names_none(api: Client) -> None:
    response = api.post("/v1/auth/device", content_type="application/json", headers={"User-Agent": "amy/1.2.3 (linux)"})
    assert response.status_code == 200
    login = DeviceLogin.objects.get()
    assert (login.client_name, login.client_version) == ("amy", "1.2.3")


def test_the_address_shown_is_the_client_behind_the_trusted_proxies(api: Client, settings) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    response = api.post(
        "/v1/auth/device", content_type="application/json", headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}
    )
    assert response.status_code == 200
    assert DeviceLogin.objects.get().requested_ip == "198.51.100.7"


def test_a_client_name_is_stored_as_plain_text_and_escaped_on_the_page(api: Client) -> None:
    started = post(api, "/v1/auth/device", {"client_name": '<b onload="x">amy</b>'}).json()
    assert DeviceLogin.objects.get().client_name == "b onloadxamy/b"
    html = api.get("/cli/login", {"code": started["user_code"]}).content.decode()
    assert "<b onload" not in html


def test_a_client_name_past_64_characters_is_invalid_field(api: Client) -> None:
    error = assert_error(post(api, "/v1/auth/device", {"client_name": "x" * 65}), 400, "invalid_field")
    assert error["details"] == {"field": "client_name"}


def test_the_page_of_an_unknown_or_expired_code_says_so_and_offers_no_approval(api: Client) -> None:
    html = api.get("/cli/login", {"code": "BCDF-GHJK"}).content.decode()
    assert "unknown or has expired" in html
    assert '"pending": false' in html


# --- a person's CLI tokens: list and revoke ---------------------------------------------------------


def test_tokens_are_listed_with_their_client_and_use_but_never_the_token(
    api: Client, fake_clerk: FakeClerk, no_poll_interval: None
) -> None:
    started = post(api, "/v1/auth/device", {"client_name": "amy-cli", "client_version": "0.9.1"}).json()
    approve(api, started["user_code"], fake_clerk.token("user_clerk_7"))
    token = poll(api, started["device_code"]).json()["token"]
    older = cli_token_issue(user=User.objects.get(pk="user_clerk_7"))
    CliToken.objects.filter(jti=jwt.decode(older.token, options={"verify_signature": False})["jti"]).update(
        issued_at=timezone.now() - timedelta(days=1)
    )

    response = api.get("/v1/auth/tokens", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200, response.content
    newest, oldest = response.json()["data"]
    row = CliToken.objects.get(jti=newest["id"])
    assert newest == {
        "id": row.jti,
        "created_at": newest["created_at"],
        "expires_at": newest["expires_at"],
        "last_used_at": newest["last_used_at"],
        "client_name": "amy-cli",
        "client_version": "0.9.1",
        "current": True,
    }
    assert timezone.datetime.fromisoformat(newest["created_at"]) == row.issued_at
    assert newest["last_used_at"] is not None  # this very request
    assert (oldest["current"], oldest["client_name"], oldest["last_used_at"]) == (False, "", None)
    assert token not in response.content.decode()
    assert older.token not in response.content.decode()


def test_a_revoked_token_is_refused_and_leaves_the_list(api: Client, fake_clerk: FakeClerk) -> None:
    user = User.objects.create(id="user_clerk_7")
    lost = cli_token_issue(user=user)
    lost_id = jwt.decode(lost.token, options={"verify_signature": False})["jti"]
    browser = {"Authorization": f"Bearer {fake_clerk.token('user_clerk_7')}"}

    assert api.delete(f"/v1/auth/tokens/{lost_id}", headers=browser).status_code == 204

    assert_error(api.get("/v1/auth/tokens", headers={"Authorization": f"Bearer {lost.token}"}), 401, "invalid_token")
    assert api.get("/v1/auth/tokens", headers=browser).json() == {"data": []}
    assert_error(api.delete(f"/v1/auth/tokens/{lost_id}", headers=browser), 404, "token_not_found")


def test_another_users_token_is_not_found_and_stays_valid(api: Client, fake_clerk: FakeClerk) -> None:
    theirs = cli_token_issue(user=User.objects.create(id="user_clerk_8"))
    theirs_id = jwt.decode(theirs.token, options={"verify_signature": False})["jti"]
    mine = {"Authorization": f"Bearer {fake_clerk.token('user_clerk_7')}"}
    for token_id in (theirs_id, "no-such-token", "x" * 300, "%00", "a%20b"):
        assert_error(api.delete(f"/v1/auth/tokens/{token_id}", headers=mine), 404, "token_not_found")
    assert CliToken.objects.get(jti=theirs_id).revoked_at is None


def test_last_used_is_written_at_most_once_a_minute(api: Client) -> None:
    issued = cli_token_issue(user=User.objects.create(id="user_clerk_7"))
    headers = {"Authorization": f"Bearer {issued.token}"}
    jti = jwt.decode(issued.token, options={"verify_signature": False})["jti"]
    assert api.get("/v1/auth/tokens", headers=headers).status_code == 200
    first = CliToken.objects.get(jti=jti).last_used_at
    assert first is not None

    with CaptureQueriesContext(connection) as queries:
        assert api.get("/v1/auth/tokens", headers=headers).status_code == 200
    assert CliToken.objects.get(jti=jti).last_used_at == first
    assert not [q for q in queries.captured_queries if q["sql"].startswith('UPDATE "cli_tokens"')]

    CliToken.objects.filter(jti=jti).update(last_used_at=first - timedelta(seconds=61))
    assert api.get("/v1/auth/tokens", headers=headers).status_code == 200
    assert CliToken.objects.get(jti=jti).last_used_at > first
