"""Real processes for tests: the shared harness (harness/processes.py) with the tests' settings.

What is the tests' own: the environment of a web or worker process under test (short timings, the
test secret) and a worker that also knows the test-only event types (tests/fault_hooks.py).
"""

from __future__ import annotations

import os
from typing import Any

from harness import processes
from harness.processes import (
    BIN,
    PYTHON,
    ROOT,
    WORKER_QUEUES,
    Gunicorn,
    ManagedProcess,
    PostgresCluster,
    RedisServer,
    free_port,
    kill_group,
    manage,
    running,
    wait_for,
)

__all__ = [
    "BIN",
    "PYTHON",
    "ROOT",
    "WORKER_QUEUES",
    "CeleryWorker",
    "Gunicorn",
    "ManagedProcess",
    "PostgresCluster",
    "RedisServer",
    "free_port",
    "kill_group",
    "manage",
    "running",
    "service_env",
    "wait_for",
]


def service_env(*, database_url: str, redis_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a web or worker process under test: short timings, test secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMY_", "CELERY_", "DATABASE_", "REDIS_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "amy.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "ENVIRONMENT": "development",
            "TERRA_WEBHOOK_SECRET": os.environ.get("TERRA_WEBHOOK_SECRET", "test-secret"),
            "AMY_RETRY_BASE_SECONDS": "0.2",
            "AMY_RETRY_MAX_SECONDS": "1",
            "AMY_TASK_TIME_LIMIT": "8",
            "AMY_VISIBILITY_TIMEOUT": "12",
            "AMY_UNACKED_RESTORE_INTERVAL": "1",
            "AMY_PUBLISH_COOLDOWN_SECONDS": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


class CeleryWorker(processes.CeleryWorker):
    """A worker on both queues that also registers the test-only event types."""

    def __init__(self, env: dict[str, str] | None, concurrency: int = 2, **options: Any) -> None:
        options.setdefault("name", "test")
        options.setdefault("include", ("tests.fault_hooks",))
        super().__init__(env, concurrency, **options)
