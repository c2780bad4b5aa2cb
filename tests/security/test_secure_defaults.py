"""No built-in secrets unless development is asked for by name.

The development values of the secrets are printed in this repository, so an unset `ENVIRONMENT`
means production: `manage.py check` and every process (web, worker, beat) refuse to start until
each secret is set, and say in one message which ones are missing.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.live import BIN, ROOT, free_port

SECRETS = [
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "TERRA_WEBHOOK_SECRET",
    "TERRA_DEV_ID",
    "TERRA_API_KEY",
    "AMY_JWT_SECRET",
    "AMY_ADMIN_KEY",
]
MISSING_ALL = "which are not set: " + ", ".join(SECRETS) + "."


def bare_env(**extra: str) -> dict[str, str]:
    """The test's environment without ENVIRONMENT and without any secret."""
    drop = {"ENVIRONMENT", "DJANGO_SETTINGS_MODULE", *SECRETS}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # A process that started instead of refusing would run until the timeout: that fails the test.
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)


def test_environment_defaults_to_production_and_check_names_every_missing_secret() -> None:
    result = run([sys.executable, "manage.py", "check"], bare_env())
    assert result.returncode != 0
    [line] = [line for line in result.stderr.splitlines() if "ImproperlyConfigured:" in line]
    assert "ENVIRONMENT=production (the default) needs these settings" in line
    assert line.endswith(
        MISSING_ALL + " Set them (see .env.example), or set ENVIRONMENT=development"
        " to run locally on the repository's development values."
    ), line


def test_production_by_name_names_only_the_secrets_still_missing() -> None:
    env = bare_env(ENVIRONMENT="production", SECRET_KEY="k" * 60, AMY_ADMIN_KEY="ops", TERRA_DEV_ID="dev")
    result = run([sys.executable, "manage.py", "check"], env)
    assert result.returncode != 0
    expected = "which are not set: ALLOWED_HOSTS, TERRA_WEBHOOK_SECRET, TERRA_API_KEY, AMY_JWT_SECRET."
    assert "ImproperlyConfigured: ENVIRONMENT=production needs these settings, " + expected in result.stderr


def test_development_values_are_used_only_when_development_is_named() -> None:
    code = "import django; django.setup(); from django.conf import settings as s; print(s.AMY_ADMIN_KEY)"
    named = run(
        [sys.executable, "-c", code], bare_env(ENVIRONMENT="development", DJANGO_SETTINGS_MODULE="amy.settings")
    )
    assert named.returncode == 0, named.stderr
    assert named.stdout.strip().splitlines()[-1] == "dev-admin-key"
    unnamed = run([sys.executable, "-c", code], bare_env(DJANGO_SETTINGS_MODULE="amy.settings"))
    assert unnamed.returncode != 0
    assert "dev-admin-key" not in unnamed.stdout


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([str(BIN / "gunicorn"), "amy.wsgi", "--workers", "1", "--bind"], id="web"),
        pytest.param(
            [str(BIN / "celery"), "-A", "amy", "worker", "-Q", "amy", "-P", "solo", "--without-mingle"], id="worker"
        ),
        pytest.param([str(BIN / "celery"), "-A", "amy", "beat", "--schedule", "/dev/null"], id="beat"),
    ],
)
def test_every_process_refuses_to_start_without_its_secrets(command: list[str]) -> None:
    if command[-1] == "--bind":
        command = [*command, f"127.0.0.1:{free_port()}"]
    # The broker and database are unreachable on purpose: refusing must not depend on them.
    env = bare_env(REDIS_URL="redis://127.0.0.1:1/0", DATABASE_URL="postgres://postgres@127.0.0.1:1/amy")
    result = run(command, env)
    assert result.returncode != 0
    assert MISSING_ALL in result.stdout + result.stderr
