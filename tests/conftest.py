from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import Client

import tests.fault_hooks  # noqa: F401 - registers the test-only event types in this process too
from tests.live import CeleryWorker, service_env
from tests.terra import signed_headers


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """The test Redis database (REDIS_URL), emptied for each test."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.close()


PostWebhook = Callable[..., Any]


@pytest.fixture
def post_webhook(client: Client) -> PostWebhook:
    """POST a body to a webhook path, signed as Terra signs it unless headers are given."""

    def post(body: bytes, path: str = "/webhooks/terra", headers: dict[str, str] | None = None) -> Any:
        headers = signed_headers(body) if headers is None else headers
        return client.generic("POST", path, body, content_type="application/json", headers=headers)

    return post


def tests_database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture(scope="session")
def live_worker(django_db_setup: None, django_db_blocker: Any) -> Iterator[CeleryWorker]:
    """A real Celery worker (prefork, both queues) on the test database and test Redis."""
    worker = CeleryWorker(service_env(database_url=tests_database_url(), redis_url=settings.REDIS_URL))
    worker.start()
    yield worker
    worker.kill()
