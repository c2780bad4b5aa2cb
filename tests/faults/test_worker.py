"""The whole path on real services: webhook → PostgreSQL → Redis → a real Celery worker.

What "nothing lost" means here: a body answered 200 is a ledger row, and that row ends processed,
skipped, parked or visibly dead (with its error, and a copy on terra-events-dlq) — never stuck,
never silently dropped, never looping.
"""

from __future__ import annotations

import json

import pytest
import redis

from ingest.classify import classify
from ingest.models import RawEvent, RawEventState, SleepSession, TerraConnection
from ingest.services.drain import raw_events_drain
from ingest.services.webhook import dedup_key_for, raw_event_insert
from tests.conftest import PostWebhook
from tests.fake_terra import FakeTerra
from tests.fault_hooks import COMPLETED_KEY
from tests.live import CeleryWorker, wait_for
from tests.queues import queued_messages
from tests.terra import body_of, sample

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

FINAL = (RawEventState.PROCESSED, RawEventState.SKIPPED, RawEventState.PARKED, RawEventState.DEAD)


def wait_final(raw_event_id: int, timeout: float = 30) -> RawEvent:
    wait_for(lambda: RawEvent.objects.get(pk=raw_event_id).state in FINAL, timeout, f"raw_event {raw_event_id}")
    return RawEvent.objects.get(pk=raw_event_id)


def test_a_webhook_is_normalized_by_the_worker(
    live_worker: CeleryWorker, post_webhook: PostWebhook, fake_terra: FakeTerra
) -> None:
    # when
    response = post_webhook(sample("auth_success"))
    # then
    raw_event = wait_final(response.json()["raw_event_id"])
    assert raw_event.state == RawEventState.PROCESSED, raw_event.process_error
    assert raw_event.attempts == 1
    connection = TerraConnection.objects.get(terra_user_id="7c0d2f1e-3b8a-4e5d-9f60-1a2b3c4d5e6f")
    # and the new connection's 28-day backfill was asked of Terra, per type, with our credentials
    wait_for(lambda: len(fake_terra.requests) >= 4, 20, "four backfill requests")
    requests = {r.path: r for r in fake_terra.requests[-4:]}
    assert sorted(requests) == ["/v2/activity", "/v2/body", "/v2/daily", "/v2/sleep"]
    for request in requests.values():
        assert request.query["user_id"] == [connection.terra_user_id]
        assert request.query["to_webhook"] == ["true"]
        assert (request.headers["dev-id"], request.headers["x-api-key"]) == ("test-dev-id", "test-api-key")


def test_a_skipped_event_is_marked_by_the_worker(live_worker: CeleryWorker, post_webhook: PostWebhook) -> None:
    raw_event = wait_final(post_webhook(sample("healthcheck")).json()["raw_event_id"])
    assert (raw_event.state, raw_event.process_error) == (RawEventState.SKIPPED, "skipped:healthcheck")


def test_a_transient_failure_is_retried_five_times_then_dead_lettered(
    live_worker: CeleryWorker, post_webhook: PostWebhook, redis_client: redis.Redis
) -> None:
    # when: an event whose normalizer always fails as an unreachable upstream would
    raw_event_id = post_webhook(body_of({"type": "test.always_fail"})).json()["raw_event_id"]
    # then: 1 delivery + 5 retries (backoff shrunk to 0.2 s base for the test worker)
    raw_event = wait_final(raw_event_id, timeout=60)
    assert raw_event.state == RawEventState.DEAD
    assert raw_event.attempts == 6
    assert raw_event.process_error == "retries_exhausted: ConnectionError: upstream unavailable (test)"
    # a copy for operators' tools on terra-events-dlq
    wait_for(lambda: redis_client.llen("terra-events-dlq") >= 1, 10, "the DLQ copy")
    (copy,) = queued_messages(redis_client, "terra-events-dlq")
    assert copy["raw_event_id"] == raw_event_id
    assert copy["process_error"] == raw_event.process_error
    # and the drain never picks it up again
    assert raw_events_drain(limit=500, window_seconds=86400).selected == 0


def test_bad_data_is_dead_lettered_at_once(live_worker: CeleryWorker, post_webhook: PostWebhook) -> None:
    raw_event = wait_final(post_webhook(body_of({"type": "test.bad_data"})).json()["raw_event_id"])
    assert (raw_event.state, raw_event.attempts) == (RawEventState.DEAD, 1)
    assert raw_event.process_error == "bad_data: impossible payload (test)"


def test_an_event_that_kills_its_worker_every_time_is_dead_lettered_after_max_deliveries(
    live_worker: CeleryWorker, post_webhook: PostWebhook, settings
) -> None:
    # when: each delivery SIGKILLs the pool process running it (an OOM kill looks the same)
    raw_event_id = post_webhook(body_of({"type": "test.kill_worker"})).json()["raw_event_id"]
    # then: Redis redelivers it (reject_on_worker_lost) until the PostgreSQL counter stops it
    raw_event = wait_final(raw_event_id, timeout=90)
    assert (raw_event.state, raw_event.process_error) == (RawEventState.DEAD, "max_deliveries")
    assert raw_event.attempts == settings.AMY_MAX_DELIVERIES + 1
    # and the worker still serves other events
    healthy = wait_final(post_webhook(sample("healthcheck")).json()["raw_event_id"])
    assert healthy.state == RawEventState.SKIPPED
    assert live_worker.is_running()


def test_a_row_whose_publish_was_lost_is_processed_after_the_drain(
    live_worker: CeleryWorker, redis_client: redis.Redis
) -> None:
    # given: a committed row that no message points at (the web process died after COMMIT)
    body = body_of({"type": "test.sleep", "seconds": 0})
    raw_event_id = raw_event_insert(
        body_text=body.decode(),
        dedup_key=dedup_key_for(body),
        classification=classify(json.loads(body)),
        request_id="r",
    )
    assert RawEvent.objects.get(pk=raw_event_id).state == RawEventState.RECEIVED
    # when
    assert raw_events_drain(limit=500, window_seconds=86400).published == 1
    # then
    assert wait_final(raw_event_id).state == RawEventState.PROCESSED
    assert int(redis_client.get(COMPLETED_KEY.format(raw_event_id=raw_event_id))) == 1


def test_concurrent_duplicate_messages_for_one_row_process_it_once(
    live_worker: CeleryWorker, post_webhook: PostWebhook, redis_client: redis.Redis
) -> None:
    # given: a slow event, and two extra nudges for it (a drain racing a redelivery)
    raw_event_id = post_webhook(body_of({"type": "test.sleep", "seconds": 1})).json()["raw_event_id"]
    from ingest.publish import publish_raw_events

    publish_raw_events([raw_event_id, raw_event_id])
    # then
    assert wait_final(raw_event_id).state == RawEventState.PROCESSED
    wait_for(lambda: redis_client.llen("terra-events") == 0, 10, "the extra nudges to be consumed")
    assert int(redis_client.get(COMPLETED_KEY.format(raw_event_id=raw_event_id))) == 1


def test_data_parked_before_its_connection_is_normalized_once_auth_arrives(
    live_worker: CeleryWorker, post_webhook: PostWebhook
) -> None:
    # given: Oura's sleep arrives before the connection exists (and names no user we know yet)
    sleep_id = post_webhook(sample("sleep")).json()["raw_event_id"]
    assert wait_final(sleep_id).process_error == "no_connection_for_terra_user"
    # when: the auth event creates the connection
    auth_id = post_webhook(sample("auth_success")).json()["raw_event_id"]
    # then: the parked sleep is re-enqueued and written for the user
    assert wait_final(auth_id).state == RawEventState.PROCESSED
    wait_for(lambda: RawEvent.objects.get(pk=sleep_id).state == RawEventState.PROCESSED, 30, "the unparked sleep")
    session = SleepSession.objects.get()
    assert (session.user_id, session.provider, session.raw_event_id) == (
        "user_2pQm9XkL4vN8rT1sYb6WcZ3eHdA",
        "OURA",
        sleep_id,
    )
