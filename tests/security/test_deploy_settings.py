"""Production settings: Django's deployment checklist passes with no
warning, the HTTPS settings hold the values it checks for, and what a deployment may need to
change is changeable from the environment."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest
from django.test import Client

from tests.live import ROOT

PRODUCTION = {
    "ENVIRONMENT": "production",
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(60),
    "ALLOWED_HOSTS": "api.example.com",
    "TERRA_WEBHOOK_SECRET": secrets.token_urlsafe(24),
    "TERRA_DEV_ID": "dev",
    "TERRA_API_KEY": secrets.token_urlsafe(24),
    "AMY_JWT_SECRET": secrets.token_urlsafe(40),
    "AMY_ADMIN_KEY": secrets.token_urlsafe(30),
}
# Variables of a developer's shell that would change what production means here.
_OVERRIDDEN = {*PRODUCTION, "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_PRELOAD"}
_OVERRIDDEN |= {"SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_PROXY_SSL_HEADER", "LOG_LEVEL"}

SHOWN = [
    "DEBUG",
    "SECURE_SSL_REDIRECT",
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_REDIRECT_EXEMPT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY",
    "CSRF_COOKIE_SECURE",
    "SECURE_CONTENT_TYPE_NOSNIFF",
    "SECURE_REFERRER_POLICY",
    "X_FRAME_OPTIONS",
]


def run(code_or_args: list[str], **overrides: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in _OVERRIDDEN}
    return subprocess.run(
        [sys.executable, *code_or_args],
        cwd=ROOT,
        env={**base, **PRODUCTION, **overrides},
        capture_output=True,
        text=True,
        timeout=120,
    )


def production_settings(**overrides: str) -> dict:
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {SHOWN!r}}}))"
    )
    result = run(["-c", code], DJANGO_SETTINGS_MODULE="amy.settings", **overrides)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_check_deploy_reports_nothing_with_production_settings() -> None:
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"])
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_production_serves_https_only_with_hsts_and_secure_cookies() -> None:
    assert production_settings() == {
        "DEBUG": False,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SECURE_REDIRECT_EXEMPT": ["^healthz$"],
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SESSION_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "SECURE_REFERRER_POLICY": "same-origin",
        "X_FRAME_OPTIONS": "DENY",
    }


def test_a_deployment_can_narrow_hsts_and_trust_no_proxy_header_from_the_environment() -> None:
    shown = production_settings(
        SECURE_HSTS_SECONDS="3600",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="false",
        SECURE_HSTS_PRELOAD="false",
        SECURE_PROXY_SSL_HEADER="",
    )
    assert (shown["SECURE_HSTS_SECONDS"], shown["SECURE_HSTS_INCLUDE_SUBDOMAINS"], shown["SECURE_HSTS_PRELOAD"]) == (
        3600,
        False,
        False,
    )
    assert shown["SECURE_PROXY_SSL_HEADER"] is None


def test_turning_the_https_redirect_off_is_reported_by_check_deploy() -> None:
    # The checklist stays the guard: switching a protection off is never silent.
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], SECURE_SSL_REDIRECT="false")
    assert result.returncode != 0
    assert "security.W008" in result.stderr


@pytest.mark.django_db
def test_plain_http_is_redirected_to_https_except_the_health_check(settings) -> None:
    # given: production's HTTPS settings in this process (the middleware reads them per client)
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    settings.SECURE_HSTS_SECONDS = 31536000
    client = Client()
    # then: a load balancer's plain-HTTP probe is answered, other plain HTTP is sent to https
    assert client.get("/healthz").status_code == 200
    redirected = client.get("/v1/me")
    assert (redirected.status_code, redirected["Location"]) == (301, "https://testserver/v1/me")
    # and through the proxy (X-Forwarded-Proto: https) the API answers, with HSTS
    proxied = client.get("/v1/me", headers={"X-Forwarded-Proto": "https"})
    assert proxied.status_code == 401
    assert proxied["Strict-Transport-Security"].startswith("max-age=31536000")
