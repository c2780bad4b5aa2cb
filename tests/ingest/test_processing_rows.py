"""What a batch writes: each natural key once, by the ordering rule, in one lock order; and what a
re-delivery that changes nothing leaves alone."""

from __future__ import annotations

import contextlib
import json
import threading
from datetime import date, timedelta
from typing import Any

import pytest
from django.db import connection, connections

from ingest.models import DailySummary, RawEvent, RawEventState, SleepSession
from ingest.normalizers import sleep
from ingest.services import processing, typed_rows
from ingest.services.processing import raw_events_process_ready
from tests.ledger import deliver, store
from tests.terra import body_of, sample

pytestmark = pytest.mark.django_db


DAYS = range(1, 11)


def daily_body(day: int, steps: int, *, n: int = 0) -> bytes:
    payload = json.loads(sample("daily"))
    item = payload["data"][0]
    item["metadata"]["start_time"] = f"{date(2025, 1, 1) + timedelta(days=day - 1)}T00:00:00+00:00"
    item["distance_data"]["steps"] = steps
    payload["n"] = n  # a distinct body for the same values
    return body_of(payload)


def sleep_body(score: float | None, *, n: int = 0, summary_id: str = "s-1") -> bytes:
    payload = json.loads(sample("sleep"))
    item = payload["data"][0]
    item["metadata"]["summary_id"] = summary_id
    item["scores"] = {"sleep": score}
    item["data_enrichment"] = {}
    payload["n"] = n
    return body_of(payload)


@pytest.fixture
def connected() -> None:
    deliver(sample("auth_success"))


def test_a_batchs_copies_of_one_row_are_written_once_by_the_ordering_rule(connected: None) -> None:
    # given: three copies of one day in the ledger, the newest (by Terra's ordering) in the middle
    oldest = store(daily_body(1, 100), ordering_ts=1000)
    newest = store(daily_body(1, 300), ordering_ts=3000)
    middle = store(daily_body(1, 200), ordering_ts=2000)
    # when: one batch takes them all
    assert raw_events_process_ready() == {"done": 3}
    # then: one row, the newest copy's
    row = DailySummary.objects.get()
    assert (row.steps, row.raw_event_id, row.ordering_ts) == (300, newest.pk, 3000)
    states = RawEvent.objects.filter(pk__in=[oldest.pk, newest.pk, middle.pk]).values_list("state", flat=True)
    assert set(states) == {RawEventState.PROCESSED}


def test_a_batch_keeps_an_enrichment_score_its_newest_copy_lacks(connected: None) -> None:
    store(sleep_body(81.0, n=1), ordering_ts=1000)
    newest = store(sleep_body(None, n=2), ordering_ts=2000)
    raw_events_process_ready()
    session = SleepSession.objects.get()
    assert (session.sleep_score, session.raw_event_id) == (81.0, newest.pk)


def test_a_redelivery_that_changes_no_value_leaves_the_row_untouched(connected: None) -> None:
    # given: a day stored
    first = deliver(daily_body(1, 100, n=1), ordering_ts=1000)
    before = DailySummary.objects.values("raw_event_id", "ordering_ts", "updated_at", "sync_stamp").get()
    # when: the nightly backfill re-delivers it (a new ledger row, a newer ordering time, same values)
    again = deliver(daily_body(1, 100, n=2), ordering_ts=5000)
    # then: processed, and the row as it was, so /v1/sync has nothing to re-send
    assert again.state == RawEventState.PROCESSED
    after = DailySummary.objects.values("raw_event_id", "ordering_ts", "updated_at", "sync_stamp").get()
    assert after == before
    assert after["raw_event_id"] == first.pk
    # and a copy that does change a value still replaces the row
    changed = deliver(daily_body(1, 150, n=3), ordering_ts=6000)
    row = DailySummary.objects.get()
    assert (row.steps, row.raw_event_id, row.ordering_ts) == (150, changed.pk, 6000)


def test_a_sleep_summary_id_longer_than_the_column_is_bad_data_not_cut(connected: None) -> None:
    too_long = "s" * (sleep.SUMMARY_ID_MAX_LENGTH + 1)
    raw_event = deliver(sleep_body(80.0, summary_id=too_long))
    assert raw_event.state == RawEventState.DEAD
    assert raw_event.process_error.startswith("bad_data: data[0].metadata.summary_id is longer than")
    assert not SleepSession.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_workers_writing_the_same_rows_in_opposite_orders_never_deadlock(monkeypatch) -> None:
    # given: a connected user (its connection made by a first event), and two batches' worth of
    # events over the same days, the second in reverse day order
    deliver(sample("auth_success"))
    deliver(daily_body(400, 1))
    for day in DAYS:
        store(daily_body(day, 100, n=day), ordering_ts=1000)
    for day in reversed(DAYS):
        store(daily_body(day, 200, n=1000 + day), ordering_ts=2000)
    # each worker writes one row per statement and, after its first, waits (a while at most) for
    # the other to have written its first too: the moment two writers in opposite orders cross
    monkeypatch.setattr(typed_rows, "_CHUNK_ROWS", 1)
    barrier = threading.Barrier(2)
    first_statement = threading.local()
    upsert_chunk = typed_rows._upsert_chunk

    def upsert_then_wait(*args: Any) -> Any:
        stats = upsert_chunk(*args)
        if not getattr(first_statement, "done", False):
            first_statement.done = True
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=3)
        return stats

    monkeypatch.setattr(typed_rows, "_upsert_chunk", upsert_then_wait)
    failed_runs: list[str] = []
    real_info = processing.logger.info

    def info(message: str, *args: Any) -> None:
        if message.startswith("a run of"):
            failed_runs.append(message % args)
        real_info(message, *args)

    monkeypatch.setattr(processing.logger, "info", info)
    deadlocks_before = _deadlocks()
    # when
    results: list[dict[str, int]] = []

    def worker() -> None:
        try:
            results.append(raw_events_process_ready(batch_size=len(DAYS), max_seconds=60))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # then: every event written once, the newer copies won, and no run failed on a deadlock
    assert results == [{"done": len(DAYS)}, {"done": len(DAYS)}]
    assert failed_runs == []
    assert _deadlocks() == deadlocks_before
    assert set(DailySummary.objects.exclude(steps=1).values_list("steps", flat=True)) == {200}


def _deadlocks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]
