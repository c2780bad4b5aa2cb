"""Configuration fails loudly in production and passes Django's deployment checks when complete."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from tests.live import ROOT

PRODUCTION = {
    "ENVIRONMENT": "production",
    "SECRET_KEY": secrets.token_urlsafe(60),
    "ALLOWED_HOSTS": "api.example.com",
    "TERRA_WEBHOOK_SECRET": "whsec",
    "TERRA_DEV_ID": "dev",
    "TERRA_API_KEY": "key",
    "AMY_JWT_SECRET": secrets.token_urlsafe(40),
    "AMY_ADMIN_KEY": secrets.token_urlsafe(30),
}


def check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in PRODUCTION}
    return subprocess.run(
        [sys.executable, "manage.py", "check", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True
    )


def test_production_settings_pass_the_deployment_checklist() -> None:
    result = check(PRODUCTION, "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr


def test_production_refuses_to_start_without_each_secret() -> None:
    names = ["SECRET_KEY", "ALLOWED_HOSTS", "TERRA_WEBHOOK_SECRET", "TERRA_DEV_ID", "TERRA_API_KEY"]
    for name in [*names, "AMY_JWT_SECRET", "AMY_ADMIN_KEY"]:
        env = {k: v for k, v in PRODUCTION.items() if k != name}
        result = check(env)
        assert result.returncode != 0, name
        assert f"ENVIRONMENT=production needs these settings, which are not set: {name}." in result.stderr, name


def test_a_retry_countdown_whose_jitter_outlives_the_visibility_timeout_is_refused() -> None:
    # 600 s + 300 s fits in 1000 s, but a retry of 600 s may wait 720 s with its +20 % jitter.
    env = {"AMY_VISIBILITY_TIMEOUT": "1000", "AMY_RETRY_MAX_SECONDS": "600", "AMY_TASK_TIME_LIMIT": "300"}
    result = check({"ENVIRONMENT": "development", **env})
    assert result.returncode != 0
    assert "AMY_VISIBILITY_TIMEOUT must exceed" in result.stderr


def test_a_retry_countdown_longer_than_the_visibility_timeout_is_refused() -> None:
    result = check({"ENVIRONMENT": "development", "AMY_VISIBILITY_TIMEOUT": "600", "AMY_RETRY_MAX_SECONDS": "600"})
    assert result.returncode != 0
    assert "AMY_VISIBILITY_TIMEOUT must exceed" in result.stderr
