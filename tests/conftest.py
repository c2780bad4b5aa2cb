from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import redis
from django.conf import settings
from django.test import Client
from hypothesis.database import DirectoryBasedExampleDatabase

import tests.fault_hooks  # noqa: F401 - registers the test-only event types in this process too
from tests.fake_clerk import AUTHORIZED_PARTY as CLERK_AUTHORIZED_PARTY
from tests.fake_clerk import ISSUER as CLERK_ISSUER
from tests.fake_clerk import FakeClerk, SigningKey
from tests.fake_terra import FakeTerra
from tests.live import CeleryWorker, service_env
from tests.terra import signed_headers

# Property tests stay bounded (each test sets its own example count) and take no deadline, since
# the machine is shared; CI draws the same examples every run, so a failure there reproduces.
# Failing examples are remembered under var/ (ignored by git) for the next local run.
hypothesis.settings.register_profile(
    "amy",
    max_examples=100,
    deadline=None,
    database=DirectoryBasedExampleDatabase(Path(__file__).resolve().parent.parent / "var" / "hypothesis"),
)
hypothesis.settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True, database=None)
hypothesis.settings.load_profile("ci" if os.environ.get("CI", "").lower() in ("1", "true") else "amy")


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """The test Redis database (REDIS_URL), with our queues and test keys emptied.

    Not FLUSHDB: that would also drop kombu's exchange bindings, which producers declare once
    per connection, and later messages would have no route.
    """
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete("terra-events", "terra-events-dlq", "amy", *client.keys("amy-test:*"))
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


def database_url_for_tests() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture(scope="session")
def fake_terra() -> Iterator[FakeTerra]:
    fake = FakeTerra()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def live_worker(django_db_setup: None, fake_terra: FakeTerra) -> Iterator[CeleryWorker]:
    """A real Celery worker (prefork, both queues) on the test database and test Redis."""
    worker = CeleryWorker(
        service_env(
            database_url=database_url_for_tests(),
            redis_url=settings.REDIS_URL,
            TERRA_API_BASE_URL=fake_terra.url,
            TERRA_DEV_ID="test-dev-id",
            TERRA_API_KEY="test-api-key",
        )
    )
    worker.start()
    _running_live_worker.append(worker)
    yield worker
    _running_live_worker.clear()
    worker.kill()


_running_live_worker: list[CeleryWorker] = []


@pytest.fixture(autouse=True)
def only_tests_that_ask_for_it_feed_the_live_worker(request: pytest.FixtureRequest) -> None:
    """Once started, the live worker consumes the shared test queues: a task published by any
    later test (a webhook's nudge, an account erasure) would run against the test database while
    that test checks its rows or flushes the tables (a deadlock with the flush's TRUNCATE was seen).
    So it consumes only during the tests that use it."""
    if _running_live_worker:
        from amy.celery import app

        _running_live_worker[0].set_consuming("live_worker" in request.fixturenames, app)


@pytest.fixture(scope="session")
def fake_clerk_server() -> Iterator[FakeClerk]:
    fake = FakeClerk()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_clerk(fake_clerk_server: FakeClerk, settings: Any) -> Iterator[FakeClerk]:
    """Clerk's JWKS on loopback, with the settings pointing at it and an empty key cache."""
    from accounts.clerk import jwks

    settings.CLERK_JWKS_URL = fake_clerk_server.jwks_url
    settings.CLERK_ISSUER = CLERK_ISSUER
    settings.CLERK_AUTHORIZED_PARTIES = [CLERK_AUTHORIZED_PARTY]
    fake_clerk_server.keys = [SigningKey("key-1")]
    fake_clerk_server.fetches = 0
    fake_clerk_server.down = False
    jwks.clear()
    yield fake_clerk_server
    jwks.clear()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """An S3-compatible server (moto's server mode) over HTTP on loopback; its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


S3_BUCKET = "amy-lab-reports-test"


@pytest.fixture
def s3_storage(s3_server: str, settings: Any) -> Iterator[str]:
    """The `uploads` storage pointed at the S3 server (a fresh, empty bucket); the bucket name."""
    import boto3

    options = {
        "bucket_name": S3_BUCKET,
        "endpoint_url": s3_server,
        "region_name": "us-east-1",
        "access_key": "test",
        "secret_key": "test",
        "addressing_style": "path",
        "default_acl": None,
        "file_overwrite": False,
        "querystring_auth": True,
        "querystring_expire": 300,
        "object_parameters": {"ServerSideEncryption": "AES256"},
    }
    client = boto3.client(
        "s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    client.create_bucket(Bucket=S3_BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "uploads": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options},
    }
    yield S3_BUCKET
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=S3_BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=S3_BUCKET)


@pytest.fixture(scope="session", autouse=True)
def trace_writes_stay_in_the_test_database(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Write buffered trace rows while the test database exists, then stop the handler: its
    exit-time flush would otherwise write into the database the settings name after the tests."""
    from admin_ops.trace_handler import trace_handler

    yield
    handler = trace_handler()
    if handler is not None:
        with django_db_blocker.unblock():
            handler.flush()
        handler.setLevel(logging.CRITICAL + 1)
