"""No secret reaches a log line: the main flows run with every log record
captured at DEBUG, in this process and in a live gunicorn and Celery worker, and none of the
configured secrets, nor any credential a client sent (signatures, bearer tokens, device codes,
admin keys), appears in what was logged."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

import httpx
import pytest
from django.conf import settings as django_settings
from django.test import Client

import accounts.device_login
from accounts.models import User
from accounts.tokens import cli_token_issue
from amy.logging import JsonFormatter
from ingest.models import RawEvent, RawEventState
from tests.conftest import database_url_for_tests
from tests.fake_clerk import FakeClerk
from tests.fake_terra import FakeTerra
from tests.live import CeleryWorker, Gunicorn, service_env, wait_for
from tests.terra import sample, sign

WEBHOOK_SECRETS = ["whsec-current-4b1f9e2a77", "whsec-previous-c03d58e6a1"]
TERRA_API_KEY = "terra-api-key-8e5a3c1d9f"
ADMIN_KEY = "admin-key-6f2b9d0e4c81"
ADMIN_READ_KEY = "admin-read-key-1a7c3e5b92"
JWT_SECRET = "jwt-secret-0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a"
SECRET_KEY = "django-secret-key-5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d"


def rendered(records: Iterable[logging.LogRecord]) -> str:
    """Every record as the JSON formatter writes it, plus its raw args and traceback."""
    formatter = JsonFormatter()
    plain = logging.Formatter()
    parts = []
    for record in records:
        parts.append(formatter.format(record))
        parts.append(repr(record.args))
        parts.append(repr(vars(record)))
        if record.exc_info:
            parts.append(plain.formatException(record.exc_info))
    return "\n".join(parts)


def assert_no_secret(logged: str, secrets: Iterable[str]) -> None:
    assert logged.strip(), "nothing was logged: the test would prove nothing"
    leaked = [secret for secret in secrets if secret and secret in logged]
    assert not leaked, f"secrets in log output: {leaked}"


@pytest.fixture
def secrets_configured(settings: Any, fake_terra: FakeTerra) -> FakeTerra:
    settings.TERRA_WEBHOOK_SECRETS = WEBHOOK_SECRETS
    settings.TERRA_API_BASE_URL = fake_terra.url
    settings.TERRA_API_CONFIGURED = True
    settings.TERRA_DEV_ID = "test-dev-id"
    settings.TERRA_API_KEY = TERRA_API_KEY
    settings.AMY_ADMIN_KEY = ADMIN_KEY
    settings.AMY_ADMIN_READ_KEY = ADMIN_READ_KEY
    settings.AMY_JWT_SECRET = JWT_SECRET
    settings.SECRET_KEY = SECRET_KEY
    fake_terra.reset()
    yield fake_terra
    fake_terra.reset()


@pytest.mark.django_db
def test_no_secret_or_credential_is_logged_by_the_main_flows(
    caplog: pytest.LogCaptureFixture,
    secrets_configured: FakeTerra,
    fake_clerk: FakeClerk,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    # An address of this test's own, so the per-IP login limit never counts other tests' calls.
    client = Client(REMOTE_ADDR=f"2001:db8::5ec:{uuid.uuid4().hex[:4]}")
    monkeypatch.setattr(accounts.device_login, "POLL_INTERVAL_SECONDS", 0)
    sent: list[str] = []  # credentials clients sent, which must not be logged either

    # Webhooks: accepted under each secret, refused with a wrong one, with none, and malformed.
    body = sample("auth_success")
    for secret in [*WEBHOOK_SECRETS, "not-the-secret"]:
        header = sign(body, secret=secret)
        sent.append(header.split("v1=")[1])
        client.generic(
            "POST", "/webhooks/terra", body, content_type="application/json", headers={"terra-signature": header}
        )
    client.generic("POST", "/webhooks/terra", body, content_type="application/json", headers={"terra-signature": "t=1"})

    # CLI login by device flow, then the token at work and revoked.
    started = client.post("/v1/auth/device", {}, content_type="application/json").json()
    sent.append(started["device_code"])
    clerk_token = fake_clerk.token("user_secrets_1")
    sent.append(clerk_token)
    client.post(
        "/v1/auth/cli-approve",
        {"user_code": started["user_code"], "confirmed": True},
        content_type="application/json",
        headers={"Authorization": f"Bearer {clerk_token}"},
    )
    for _ in range(20):
        polled = client.post("/v1/auth/token", {"device_code": started["device_code"]}, content_type="application/json")
        if polled.status_code == 200:
            break
        time.sleep(0.25)
    assert polled.status_code == 200, polled.content
    cli_token = polled.json()["token"]
    sent.append(cli_token)
    bearer = {"Authorization": f"Bearer {cli_token}"}
    assert client.get("/v1/me", headers=bearer).status_code == 200  # refreshes from Terra (the fake)
    assert client.post("/v1/connect", "{}", content_type="application/json", headers=bearer).status_code == 200
    # Terra failing: the error paths log most, and must not log the request's key either.
    secrets_configured.status = 500
    client.post("/v1/connect", "{}", content_type="application/json", headers=bearer)
    secrets_configured.status = 401
    client.post("/v1/connect", "{}", content_type="application/json", headers=bearer)
    secrets_configured.status = 200
    client.post("/v1/auth/logout", {}, content_type="application/json", headers=bearer)
    assert client.get("/v1/me", headers=bearer).status_code == 401
    forged = cli_token[:-4] + ("AAAA" if not cli_token.endswith("AAAA") else "BBBB")
    sent.append(forged)
    client.get("/v1/me", headers={"Authorization": f"Bearer {forged}"})

    # Ops keys: right, read-only writing, wrong.
    assert client.get("/admin/healthz", headers={"x-admin-key": ADMIN_KEY}).status_code == 200
    assert client.get("/admin/healthz", headers={"x-admin-key": ADMIN_READ_KEY}).status_code == 200
    client.post("/admin/dlq/replay", {}, content_type="application/json", headers={"x-admin-key": ADMIN_READ_KEY})
    wrong_key = "admin-key-6f2b9d0e4c80"  # one character off
    sent.append(wrong_key)
    assert client.get("/admin/healthz", headers={"x-admin-key": wrong_key}).status_code == 401

    # then
    assert len(secrets_configured.requests) >= 2, "the Terra client was not exercised"
    secrets = [*WEBHOOK_SECRETS, TERRA_API_KEY, ADMIN_KEY, ADMIN_READ_KEY, JWT_SECRET, SECRET_KEY, *sent]
    assert_no_secret(rendered(caplog.records) + caplog.text, secrets)


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_no_secret_is_written_to_stdout_by_a_live_web_server_and_worker(
    live_worker: CeleryWorker, fake_terra: FakeTerra, settings: Any
) -> None:
    # given: gunicorn logging at DEBUG, with its own secrets, on the test database and Redis
    env = service_env(
        database_url=database_url_for_tests(),
        redis_url=django_settings.REDIS_URL,
        LOG_LEVEL="DEBUG",
        SECRET_KEY=SECRET_KEY,
        TERRA_WEBHOOK_SECRET=",".join(WEBHOOK_SECRETS),
        TERRA_API_BASE_URL=fake_terra.url,
        TERRA_DEV_ID="test-dev-id",
        TERRA_API_KEY=TERRA_API_KEY,
        AMY_ADMIN_KEY=ADMIN_KEY,
        AMY_ADMIN_READ_KEY=ADMIN_READ_KEY,
        AMY_JWT_SECRET=JWT_SECRET,
    )
    web = Gunicorn(env, workers=1)
    web.start()
    try:
        settings.AMY_JWT_SECRET = JWT_SECRET  # so the token issued here is valid over there
        cli_token = cli_token_issue(user=User.objects.create(id="user_live_secrets")).token
        sent = [cli_token]
        with httpx.Client(base_url=web.url, timeout=10) as http:
            body = sample("auth_success")
            for secret in [WEBHOOK_SECRETS[0], "not-the-secret"]:
                header = sign(body, secret=secret)
                sent.append(header.split("v1=")[1])
                answer = http.post("/webhooks/terra", content=body, headers={"terra-signature": header})
            accepted = http.post(
                "/webhooks/terra",
                content=sample("daily"),
                headers={"terra-signature": sign(sample("daily"), secret=WEBHOOK_SECRETS[1])},
            )
            assert accepted.status_code == 200, accepted.text
            assert answer.status_code == 401
            assert http.get("/admin/healthz", headers={"x-admin-key": ADMIN_KEY}).status_code == 200
            assert http.get("/admin/healthz", headers={"x-admin-key": "nope-" + ADMIN_KEY}).status_code == 401
            sent.append("nope-" + ADMIN_KEY)
            assert http.get("/v1/me", headers={"Authorization": f"Bearer {cli_token}"}).status_code == 200
            assert http.get("/v1/me", headers={"Authorization": f"Bearer {cli_token}x"}).status_code == 401
        # the worker processes the auth event: a connection, and backfill calls to Terra with the key
        first = RawEvent.objects.filter(event_type="auth").order_by("pk").first()
        assert first is not None
        wait_for(
            lambda: RawEvent.objects.get(pk=first.pk).state in (RawEventState.PROCESSED, RawEventState.DEAD),
            30,
            "the worker to process the auth event",
        )
        wait_for(lambda: len(fake_terra.requests) >= 1, 20, "a backfill request to Terra")
    finally:
        web.kill()
    web_log, worker_log = web.log(), live_worker.log()
    # Both logs hold our JSON lines (the test would prove nothing otherwise).
    assert '"logger": "ingest.views"' in web_log
    assert '"logger": "ingest.services.processing"' in worker_log
    secrets = [
        *WEBHOOK_SECRETS,
        TERRA_API_KEY,
        "test-api-key",
        ADMIN_KEY,
        ADMIN_READ_KEY,
        JWT_SECRET,
        SECRET_KEY,
        *sent,
    ]
    assert_no_secret(web_log, secrets)
    assert_no_secret(worker_log, secrets)
