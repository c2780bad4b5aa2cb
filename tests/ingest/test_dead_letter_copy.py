"""A dead letter's copy: exactly one message, on `terra-events-dlq` only, counted over every list in
the test Redis database, whether the publishing process has loaded Celery's queue table (as a worker
has, with its queues declared) or not (a management command, the web process)."""

from __future__ import annotations

import subprocess
import textwrap

import pytest
import redis
from django.conf import settings

from amy.celery import app as celery_app
from ingest.models import RawEvent, RawEventState
from ingest.services.dead_letter import raw_event_dead_letter
from tests.conftest import database_url_for_tests
from tests.live import PYTHON, ROOT, service_env
from tests.queues import queued_messages

DLQ = "terra-events-dlq"


def list_lengths(client: redis.Redis) -> dict[str, int]:
    """The length of every Redis list in the database (kombu keeps each queue as one list)."""
    lengths = {}
    for key in client.scan_iter(count=1000):
        if client.type(key) == b"list":
            lengths[key.decode()] = client.llen(key)
    return lengths


def grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: n - before.get(name, 0) for name, n in after.items() if n != before.get(name, 0)}


def received_row() -> RawEvent:
    return RawEvent.objects.create(
        event_type="sleep", terra_user_id="u-dlq", dedup_key="d" * 64, payload="{}", state=RawEventState.RECEIVED
    )


@pytest.fixture
def queues_declared_as_a_worker_declares_them(redis_client: redis.Redis) -> redis.Redis:
    """Every queue of Celery's table declared on the test Redis, with the bindings Celery gives
    them (what a running worker and the task publishers leave behind)."""
    redis_client.delete("")
    with celery_app.connection_for_write() as connection:
        for queue in celery_app.amqp.queues.values():
            queue(connection.default_channel).declare()
    return redis_client


@pytest.mark.django_db(transaction=True)
def test_a_dead_letter_puts_one_copy_on_the_dlq_and_nothing_on_any_other_queue(
    queues_declared_as_a_worker_declares_them: redis.Redis,
) -> None:
    # given
    client = queues_declared_as_a_worker_declares_them
    raw_event = received_row()
    before = list_lengths(client)
    # when
    assert raw_event_dead_letter(raw_event_id=raw_event.pk, error="bad data: no date")
    # then
    assert grown(before, list_lengths(client)) == {DLQ: 1}
    (copy,) = queued_messages(client, DLQ)
    assert (copy["raw_event_id"], copy["process_error"]) == (raw_event.pk, "bad data: no date")


@pytest.mark.django_db(transaction=True)
def test_a_process_that_never_loaded_celerys_queue_table_puts_its_copy_on_the_dlq_too(
    queues_declared_as_a_worker_declares_them: redis.Redis,
) -> None:
    # given: a fresh interpreter that only sets Django up and dead-letters the row
    client = queues_declared_as_a_worker_declares_them
    raw_event = received_row()
    before = list_lengths(client)
    script = textwrap.dedent(
        f"""
        import django
        django.setup()
        from ingest.services.dead_letter import raw_event_dead_letter
        assert raw_event_dead_letter(raw_event_id={raw_event.pk}, error="bad data: no date")
        """
    )
    env = service_env(database_url=database_url_for_tests(), redis_url=settings.REDIS_URL)
    # when
    result = subprocess.run([PYTHON, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    # then
    assert result.returncode == 0, result.stderr
    assert grown(before, list_lengths(client)) == {DLQ: 1}
    assert [m["raw_event_id"] for m in queued_messages(client, DLQ)] == [raw_event.pk]
