"""Batches (`raw_events_process_ready`): a delivery takes its own row and the rows waiting behind
it. Each row keeps the single path's promises: one counted delivery, written once, a failure that
stays its own (dead letter or retry), and the messages that arrive later for rows a batch already
did are no-ops."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from amy import tracing
from amy.request_context import current_request_id
from ingest.models import DailySummary, RawEvent, RawEventState, TerraConnection
from ingest.normalizers import NORMALIZERS, daily
from ingest.normalizers.base import ParsedRows, data_event
from ingest.publish import publish_after_commit
from ingest.services.processing import ProcessStatus, raw_event_process, raw_events_claim, raw_events_process_ready
from tests.ledger import store
from tests.queues import queued_task_kwargs
from tests.terra import body_of, sample

pytestmark = pytest.mark.django_db


def states(*rows: RawEvent) -> list[tuple[str, int, str | None]]:
    fresh = {row.pk: row for row in RawEvent.objects.filter(pk__in=[r.pk for r in rows])}
    return [(fresh[r.pk].state, fresh[r.pk].attempts, fresh[r.pk].process_error) for r in rows]


def daily_event(n: int) -> RawEvent:
    """A waiting daily event of the sample's Terra user (distinct by `n`: its own date)."""
    payload = json.loads(sample("daily"))
    payload["data"][0]["metadata"]["start_time"] = f"2026-01-{n:02d}T00:00:00+00:00"
    return store(body_of(payload))


def skipped(n: int) -> RawEvent:
    """A waiting row that needs no work (a healthcheck), distinct by `n`."""
    return store(body_of({**json.loads(sample("healthcheck")), "n": n}))


def test_a_batch_processes_every_waiting_row_once_and_their_own_messages_find_them_done() -> None:
    # given
    rows = [store(sample("auth_success")), skipped(1), skipped(2), store(body_of({"hello": "world"}))]
    # when
    counts = raw_events_process_ready()
    # then: each row final after one counted delivery
    assert counts == {"done": 4}
    assert [state for state, _, _ in states(*rows)] == ["processed", "skipped", "skipped", "skipped"]
    assert [attempts for _, attempts, _ in states(*rows)] == [1, 1, 1, 1]
    # and the nudges still queued for them claim nothing and count nothing
    assert {raw_event_process(raw_event_id=row.pk).status for row in rows} == {ProcessStatus.NOT_CLAIMED}
    assert [attempts for _, attempts, _ in states(*rows)] == [1, 1, 1, 1]


def test_bad_data_in_a_batch_is_dead_lettered_alone_and_its_neighbours_are_written() -> None:
    before, bad, after = skipped(1), store(body_of({"type": "test.bad_data"})), skipped(2)
    raw_events_process_ready()
    assert states(before, bad, after) == [
        ("skipped", 1, "skipped:healthcheck"),
        ("dead", 1, "bad_data: impossible payload (test)"),
        ("skipped", 1, "skipped:healthcheck"),
    ]


def test_a_transient_failure_in_a_batch_waits_for_its_retry_message_alone(
    django_capture_on_commit_callbacks, redis_client: redis.Redis
) -> None:
    # given
    failing, neighbour = store(body_of({"type": "test.always_fail"})), skipped(1)
    # when: the batch runs, and its retry message is sent after commit
    with django_capture_on_commit_callbacks(execute=True):
        raw_events_process_ready()
    # then: the neighbour is done; the failing row is leased past its retry, its error kept
    failing.refresh_from_db()
    assert (failing.state, failing.attempts) == (RawEventState.PROCESSING, 1)
    assert failing.process_error == "ConnectionError: upstream unavailable (test)"
    assert failing.lease_until is not None
    assert failing.lease_until > timezone.now() + timedelta(seconds=20)
    assert states(neighbour)[0][0] == "skipped"
    # and the retry message on terra-events names this delivery, as Task.retry would have
    assert queued_task_kwargs(redis_client, "terra-events") == [
        {"raw_event_id": failing.pk, "request_id": "req_test", "retry_of": 1}
    ]
    # and only that retry may claim the row: a plain nudge (or the next batch) leaves it alone
    assert raw_event_process(raw_event_id=failing.pk).status == ProcessStatus.NOT_CLAIMED
    assert raw_events_process_ready() == {}
    assert raw_event_process(raw_event_id=failing.pk, retry_of=1).status == ProcessStatus.RETRY
    assert states(failing)[0][:2] == ("processing", 2)


def test_a_rows_own_nudge_leaves_it_to_the_batch_that_claimed_it() -> None:
    # given: rows a batch has claimed (committed) and not yet locked
    row = skipped(1)
    assert [c.pk for c in raw_events_claim(limit=10)] == [row.pk]
    assert states(row) == [("processing", 1, "claimed_by_batch")]
    # when: the row's own nudge arrives in that moment
    result = raw_event_process(raw_event_id=row.pk)
    # then: it does not take the row as one whose holder is gone, and counts no delivery
    assert result.status == ProcessStatus.NOT_CLAIMED
    assert states(row) == [("processing", 1, "claimed_by_batch")]
    # and once the batch's lease has run out (the batch died), the drain's nudge may claim it
    RawEvent.objects.filter(pk=row.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert raw_event_process(raw_event_id=row.pk).status == ProcessStatus.DONE
    assert states(row) == [("skipped", 2, "skipped:healthcheck")]


def test_a_batch_claims_again_while_rows_wait() -> None:
    for n in range(5):
        skipped(n)
    # three claims of at most two rows each, until none waits
    assert raw_events_process_ready(batch_size=2, max_seconds=5) == {"done": 5}
    assert RawEvent.objects.filter(state=RawEventState.SKIPPED).count() == 5


def test_batches_are_off_at_size_zero(settings) -> None:
    settings.AMY_NORMALIZE_BATCH_SIZE = 0
    row = skipped(1)
    assert raw_events_process_ready() == {}
    assert states(row) == [("received", 0, None)]


def test_parked_dead_and_processing_rows_are_not_taken_by_a_batch() -> None:
    parked, dead, held = skipped(1), skipped(2), skipped(3)
    RawEvent.objects.filter(pk=parked.pk).update(state=RawEventState.PARKED)
    RawEvent.objects.filter(pk=dead.pk).update(state=RawEventState.DEAD, process_error="max_deliveries")
    RawEvent.objects.filter(pk=held.pk).update(
        state=RawEventState.PROCESSING, attempts=1, lease_until=timezone.now() + timedelta(minutes=5)
    )
    assert raw_events_process_ready() == {}
    assert [state for state, _, _ in states(parked, dead, held)] == ["parked", "dead", "processing"]


def test_a_row_whose_holder_died_is_taken_by_the_next_batch_once_its_lease_ran_out() -> None:
    # given: a row claimed by a delivery that died (its lease ran out), and a waiting row
    abandoned, waiting = skipped(1), skipped(2)
    RawEvent.objects.filter(pk=abandoned.pk).update(
        state=RawEventState.PROCESSING,
        attempts=1,
        process_error="claimed_by_batch",
        lease_until=timezone.now() - timedelta(seconds=1),
    )
    # when
    assert raw_events_process_ready() == {"done": 2}
    # then: both done, the abandoned row's second delivery counted
    assert states(abandoned, waiting) == [("skipped", 2, "skipped:healthcheck"), ("skipped", 1, "skipped:healthcheck")]


def test_a_batch_locks_each_terra_users_connection_once_and_marks_its_rows_together() -> None:
    # given: the sample's Terra user connected, and five of its events waiting
    store(sample("auth_success"))
    daily_event(1)
    raw_events_process_ready()
    rows = [daily_event(n) for n in range(2, 7)]
    # when
    with CaptureQueriesContext(connection) as queries:
        assert raw_events_process_ready() == {"done": 5}
    # then: one share lock of the connection for the five, one mark statement, every row written
    statements = [q["sql"] for q in queries.captured_queries]
    assert sum("FOR SHARE" in sql for sql in statements) == 1
    assert sum(sql.lstrip().startswith("UPDATE raw_events r\nSET state = m.state") for sql in statements) == 1
    assert [state for state, _, _ in states(*rows)] == ["processed"] * 5
    assert DailySummary.objects.filter(raw_event_id__in=[r.pk for r in rows]).count() == 5


def test_a_deauthorization_inside_a_batch_stops_the_data_events_after_it() -> None:
    # given: a connected user whose connection a batch holds (two data events), then a deauth,
    # then one more data event, all waiting together
    store(sample("auth_success"))
    raw_events_process_ready()
    before = [daily_event(1), daily_event(2)]
    deauth = store(sample("deauth"))
    after = daily_event(3)
    # when
    raw_events_process_ready()
    # then: the event after the deauth sees the connection as the deauth left it
    assert [state for state, _, _ in states(*before, deauth)] == ["processed"] * 3
    assert states(after) == [("skipped", 1, "skipped:connection_inactive")]
    assert TerraConnection.objects.get(terra_user_id=deauth.terra_user_id).status == "deauthorized"


def test_a_run_that_fails_as_a_whole_is_taken_one_event_at_a_time_and_leaves_nothing_behind(
    django_capture_on_commit_callbacks, monkeypatch
) -> None:
    # given: a connected user (its touch is due), and three data events whose middle one the
    # database refuses (a date PostgreSQL cannot read), so the run's one statement fails
    store(sample("auth_success"))
    daily_event(1)
    raw_events_process_ready()
    TerraConnection.objects.update(last_webhook_at=None)
    first, broken, last = daily_event(2), daily_event(3), daily_event(4)

    def parse(payload: dict) -> ParsedRows:
        parsed = daily.parse(payload)
        if parsed.rows[0][1]["date"].day == 3:
            parsed.rows[0][1]["date"] = "not a date"
        return parsed

    monkeypatch.setitem(NORMALIZERS, "daily", data_event(parse))
    # when
    with django_capture_on_commit_callbacks() as callbacks:
        raw_events_process_ready()
    # then: the neighbours are written once; the refused one takes the retry route alone
    assert [s[:2] for s in states(first, broken, last)] == [("processed", 1), ("processing", 1), ("processed", 1)]
    assert states(broken)[0][2].startswith("DataError")
    assert DailySummary.objects.filter(raw_event_id__in=[first.pk, last.pk]).count() == 2
    # and of the rolled-back run nothing is left: one touch per event that stood, one retry message
    touches = [c for c in callbacks if getattr(c, "__qualname__", "").startswith("connection_touch_later")]
    assert len(touches) == 2
    assert sum(getattr(c, "func", None).__name__ == "_send_retry" for c in callbacks if hasattr(c, "func")) == 1


def test_a_stored_row_publishes_no_nudge_while_one_waits_in_the_queue(
    redis_client: redis.Redis, django_capture_on_commit_callbacks
) -> None:
    # given: an empty queue; the first row's nudge goes out
    first, second = skipped(1), skipped(2)
    with django_capture_on_commit_callbacks(execute=True):
        publish_after_commit(first.pk, "req_1")
    assert queued_task_kwargs(redis_client, "terra-events") == [{"raw_event_id": first.pk, "request_id": "req_1"}]
    # when: another row is stored while that nudge waits
    with django_capture_on_commit_callbacks(execute=True):
        publish_after_commit(second.pk, "req_2")
    # then: no second nudge; the waiting one's delivery claims both
    assert len(queued_task_kwargs(redis_client, "terra-events")) == 1
    assert raw_events_process_ready(raw_event_id=first.pk) == {"done": 2}
    assert states(first, second) == [("skipped", 1, "skipped:healthcheck")] * 2


def test_a_full_claim_nudges_another_worker_and_a_delivery_out_of_time_leaves_a_continuation(
    redis_client: redis.Redis,
) -> None:
    # given: more waiting rows than one batch
    rows = [skipped(n) for n in range(5)]
    # when: a delivery whose time slice ends after its first batch
    counts = raw_events_process_ready(batch_size=2, max_seconds=0)
    # then: it did one batch, and one nudge waits for the rest (the fan-out's, which the
    # continuation found pending)
    assert counts == {"done": 2}
    assert queued_task_kwargs(redis_client, "terra-events") == [{"raw_event_id": None, "request_id": None}]
    assert [state for state, _, _ in states(*rows)].count("received") == 3
    # and the nudge's delivery takes the rest
    redis_client.delete("terra-events")
    assert raw_events_process_ready(batch_size=2, max_seconds=5) == {"done": 3}
    # the last claim came back short: nobody else is needed
    assert queued_task_kwargs(redis_client, "terra-events") == [{"raw_event_id": None, "request_id": None}]


def test_a_rows_trace_carries_its_own_request_id_whatever_its_nudge_said(monkeypatch) -> None:
    # given: a row stored by one request, nudged by another (the drain's, or another row's)
    traced: list[tuple] = []
    monkeypatch.setattr(tracing, "_sink", lambda: traced.append)
    row = skipped(1)
    RawEvent.objects.filter(pk=row.pk).update(request_id="req_of_the_row")
    token = current_request_id.set("req_of_the_nudge")
    try:
        raw_events_process_ready(raw_event_id=row.pk)
    finally:
        current_request_id.reset(token)
    # then: the worker's side of the row is found by the row's own request id
    assert sorted((record[2], record[4]) for record in traced if record[7] == row.pk) == [
        ("normalize_complete", "req_of_the_row"),
        ("normalize_start", "req_of_the_row"),
    ]
