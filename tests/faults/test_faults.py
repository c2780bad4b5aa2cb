"""Faults on a private stack: each test starts its own redis-server (and PostgreSQL cluster where it
stops the database), gunicorn and Celery worker, so it can kill them; the machine's shared servers
are left alone.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest
import redis

from ingest.models import RawEvent, RawEventState
from tests.conftest import database_url_for_tests
from tests.fault_hooks import COMPLETED_KEY
from tests.live import CeleryWorker, Gunicorn, PostgresCluster, RedisServer, manage, service_env, wait_for
from tests.terra import body_of, sample, signed_headers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

FINAL = (RawEventState.PROCESSED, RawEventState.SKIPPED, RawEventState.PARKED, RawEventState.DEAD)


@dataclass
class Stack:
    redis: RedisServer
    web: Gunicorn
    worker: CeleryWorker
    env: dict[str, str]

    def post(self, body: bytes) -> httpx.Response:
        return httpx.post(f"{self.web.url}/webhooks/terra", content=body, headers=signed_headers(body), timeout=10)


@pytest.fixture
def stack(django_db_setup: None) -> Iterator[Stack]:
    redis_server = RedisServer()
    redis_server.start()
    env = service_env(database_url=database_url_for_tests(), redis_url=redis_server.url)
    web, worker = Gunicorn(env), CeleryWorker(env)
    web.start()
    worker.start()
    yield Stack(redis_server, web, worker, env)
    worker.kill()
    web.kill()
    redis_server.kill()


def wait_final(raw_event_id: int, timeout: float = 60) -> RawEvent:
    wait_for(lambda: RawEvent.objects.get(pk=raw_event_id).state in FINAL, timeout, f"raw_event {raw_event_id}")
    return RawEvent.objects.get(pk=raw_event_id)


def test_a_worker_killed_mid_task_loses_nothing_and_the_event_is_processed_once(stack: Stack) -> None:
    # given: a task running on the worker
    raw_event_id = stack.post(body_of({"type": "test.sleep", "seconds": 3})).json()["raw_event_id"]
    wait_for(lambda: RawEvent.objects.get(pk=raw_event_id).state == RawEventState.PROCESSING, 20, "the claim")
    # when: the whole worker is SIGKILLed mid-task, then started again
    stack.worker.kill()
    stack.worker.start()
    # then: the unacked message comes back (visibility timeout) and is processed, once
    raw_event = wait_final(raw_event_id)
    assert raw_event.state == RawEventState.PROCESSED
    assert raw_event.attempts == 2
    completed = redis.Redis.from_url(stack.redis.url).get(COMPLETED_KEY.format(raw_event_id=raw_event_id))
    assert int(completed) == 1


def test_redis_down_the_webhook_still_answers_200_and_the_drain_catches_up(stack: Stack) -> None:
    # given: a working pipeline
    before = stack.post(body_of({"type": "test.sleep", "seconds": 0, "n": 1})).json()["raw_event_id"]
    assert wait_final(before).state == RawEventState.PROCESSED
    # when: Redis dies (and with it every queued message: it keeps nothing on disk)
    stack.redis.kill()
    during = stack.post(body_of({"type": "test.sleep", "seconds": 0, "n": 2}))
    # then: the body is durable and answered 200 all the same
    assert during.status_code == 200
    during_id = during.json()["raw_event_id"]
    assert RawEvent.objects.get(pk=during_id).state == RawEventState.RECEIVED
    # when: Redis comes back on the same port
    stack.redis.start()
    # then: the running worker resumes consuming on its own
    after = stack.post(body_of({"type": "test.sleep", "seconds": 0, "n": 3})).json()["raw_event_id"]
    assert wait_final(after, timeout=90).state == RawEventState.PROCESSED
    # and the drain gets the row whose publish was lost processed
    manage(stack.env, "drain_stuck_events")
    assert wait_final(during_id).state == RawEventState.PROCESSED
    assert stack.worker.is_running()


@pytest.fixture
def private_database() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    cluster.start()
    cluster.create_database()
    yield cluster
    cluster.destroy()


def test_database_down_the_webhook_answers_503_and_stores_nothing_half_written(
    private_database: PostgresCluster,
) -> None:
    # given: a web process on its own PostgreSQL
    redis_server = RedisServer()
    redis_server.start()
    env = service_env(database_url=private_database.url, redis_url=redis_server.url)
    manage(env, "migrate", "--no-input")
    web = Gunicorn(env)
    web.start()
    try:
        url = f"{web.url}/webhooks/terra"
        body = sample("sleep")
        assert httpx.post(url, content=sample("daily"), headers=signed_headers(sample("daily"))).status_code == 200
        # when: the database stops
        private_database.stop()
        response = httpx.post(url, content=body, headers=signed_headers(body), timeout=15)
        # then: no 200 without a durable row, and the webhook's own error shape
        assert response.status_code == 503
        assert response.json() == {"error": "unavailable", "request_id": response.headers["x-amy-request-id"]}
        health = httpx.get(f"{web.url}/healthz", timeout=15)
        assert health.status_code == 503
        assert health.json()["error"]["code"] == "unavailable"
        # when: it is back, Terra's redelivery is accepted once
        private_database.start()
        time.sleep(0.2)
        first = httpx.post(url, content=body, headers=signed_headers(body), timeout=15)
        again = httpx.post(url, content=body, headers=signed_headers(body), timeout=15)
        assert first.status_code == 200
        assert "raw_event_id" in first.json()
        assert again.json()["duplicate"] is True
        with psycopg.connect(private_database.url.replace("postgres://", "postgresql://")) as conn:
            rows = conn.execute("SELECT event_type, count(*) FROM raw_events GROUP BY 1 ORDER BY 1").fetchall()
        assert rows == [("daily", 1), ("sleep", 1)]
    finally:
        web.kill()
        redis_server.kill()


def test_a_hung_redis_does_not_hold_the_webhook_past_terras_timeout(stack: Stack) -> None:
    # given: Redis accepts connections but never answers (SIGSTOP: a partition looks the same)
    assert stack.redis.process is not None
    os.kill(stack.redis.process.pid, signal.SIGSTOP)
    try:
        # when: Terra delivers, and gives up after its 8 s push timeout
        bodies = [body_of({"type": "test.sleep", "seconds": 0, "n": n}) for n in range(3)]
        responses = [
            httpx.post(f"{stack.web.url}/webhooks/terra", content=b, headers=signed_headers(b), timeout=8)
            for b in bodies
        ]
    finally:
        os.kill(stack.redis.process.pid, signal.SIGCONT)
    # then: every body was answered 200 within it (the publish is bounded by the broker timeout)
    assert [r.status_code for r in responses] == [200, 200, 200]
    # and once Redis answers again, the drain gets them processed
    manage(stack.env, "drain_stuck_events")
    for response in responses:
        assert wait_final(response.json()["raw_event_id"]).state == RawEventState.PROCESSED
