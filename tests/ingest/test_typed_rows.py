"""The typed-row writer: upsert by natural key, newer copy wins, merged enrichment."""

from __future__ import annotations

import threading
from datetime import date

import pytest
from django.db import connection, transaction

from accounts.models import User
from ingest.models import Activity, DailySummary, RawEvent, SleepSession
from ingest.normalizers.base import ParsedRows
from ingest.services.typed_rows import typed_rows_write

DAY = date(2026, 11, 23)


@pytest.fixture
def user(db) -> User:
    return User.objects.create(id="u1")


def ledger_row(n: int) -> int:
    return RawEvent.objects.create(event_type="daily", dedup_key=f"{n:064d}", payload="{}").pk


def write(rows: list[tuple[type, dict]], *, raw_event_id: int, ordering_ts: int | None = None, deletions=()):
    return typed_rows_write(
        ParsedRows(rows=rows, deletions=list(deletions)),
        user_id="u1",
        provider="GARMIN",
        terra_user_id="t1",
        raw_event_id=raw_event_id,
        ordering_ts=ordering_ts,
    )


def daily(steps: int | None, **more) -> tuple[type, dict]:
    return (DailySummary, {"date": DAY, "steps": steps, **more})


def test_a_new_record_is_inserted_with_the_shared_columns(user: User) -> None:
    event = ledger_row(1)
    stats = write([daily(100)], raw_event_id=event, ordering_ts=1000)
    row = DailySummary.objects.get()
    assert (stats.inserted, stats.changed, stats.unchanged) == (1, 0, 0)
    assert (row.user_id, row.provider, row.terra_user_id, row.raw_event_id, row.ordering_ts) == (
        "u1",
        "GARMIN",
        "t1",
        event,
        1000,
    )
    assert (row.date, row.steps) == (DAY, 100)


def test_writing_the_same_event_again_changes_nothing(user: User) -> None:
    event = ledger_row(1)
    write([daily(100)], raw_event_id=event, ordering_ts=1000)
    before = DailySummary.objects.get()
    stats = write([daily(100)], raw_event_id=event, ordering_ts=1000)
    after = DailySummary.objects.get()
    assert (stats.inserted, stats.changed, stats.unchanged) == (0, 0, 1)
    assert after.updated_at == before.updated_at


def test_a_newer_copy_replaces_the_values(user: User) -> None:
    write([daily(100, avg_hr_bpm=60)], raw_event_id=ledger_row(1), ordering_ts=1000)
    newer = ledger_row(2)
    stats = write([daily(250, avg_hr_bpm=None)], raw_event_id=newer, ordering_ts=2000)
    row = DailySummary.objects.get()
    assert stats.changed == 1
    # a redelivered record is a superset: its null replaces the older value
    assert (row.steps, row.avg_hr_bpm, row.raw_event_id, row.ordering_ts) == (250, None, newer, 2000)


def test_an_older_copy_redelivered_after_a_newer_one_does_not_win(user: User) -> None:
    newer = ledger_row(1)
    write([daily(250)], raw_event_id=newer, ordering_ts=2000)
    stats = write([daily(100)], raw_event_id=ledger_row(2), ordering_ts=1000)
    row = DailySummary.objects.get()
    assert stats.unchanged == 1
    assert (row.steps, row.raw_event_id) == (250, newer)


def test_a_copy_without_ordering_timestamp_sorts_lowest(user: User) -> None:
    write([daily(250)], raw_event_id=ledger_row(1), ordering_ts=2000)
    write([daily(100)], raw_event_id=ledger_row(2), ordering_ts=None)
    assert DailySummary.objects.get().steps == 250


def test_the_ledger_id_breaks_ordering_ties(user: User) -> None:
    first, second = ledger_row(1), ledger_row(2)
    write([daily(250)], raw_event_id=second, ordering_ts=2000)
    write([daily(100)], raw_event_id=first, ordering_ts=2000)
    assert DailySummary.objects.get().steps == 250
    write([daily(300)], raw_event_id=second, ordering_ts=2000)  # re-running the winner re-applies it
    assert DailySummary.objects.get().steps == 300


def test_an_enrichment_score_is_never_replaced_by_a_null(user: User) -> None:
    session = {"summary_id": "s1", "sleep_score": 81.0, "deep_seconds": 3600.0}
    write([(SleepSession, session)], raw_event_id=ledger_row(1), ordering_ts=1000)
    write(
        [(SleepSession, {**session, "sleep_score": None, "deep_seconds": 4000.0})],
        raw_event_id=ledger_row(2),
        ordering_ts=2000,
    )
    row = SleepSession.objects.get()
    assert (row.sleep_score, row.deep_seconds) == (81.0, 4000.0)


def test_the_same_key_twice_in_one_payload_keeps_the_last_copy(user: User) -> None:
    stats = write([daily(100), daily(200)], raw_event_id=ledger_row(1))
    assert DailySummary.objects.get().steps == 200
    assert stats.inserted == 1


def test_rows_are_keyed_per_user_and_provider(user: User) -> None:
    User.objects.create(id="u2")
    write([daily(100)], raw_event_id=ledger_row(1))
    typed_rows_write(
        ParsedRows(rows=[daily(5)]),
        user_id="u2",
        provider="GARMIN",
        terra_user_id="t2",
        raw_event_id=ledger_row(2),
        ordering_ts=None,
    )
    typed_rows_write(
        ParsedRows(rows=[daily(7)]),
        user_id="u1",
        provider="OURA",
        terra_user_id="t3",
        raw_event_id=ledger_row(3),
        ordering_ts=None,
    )
    assert sorted(DailySummary.objects.values_list("user_id", "provider", "steps")) == [
        ("u1", "GARMIN", 100),
        ("u1", "OURA", 7),
        ("u2", "GARMIN", 5),
    ]


def test_a_deletion_removes_the_row_by_natural_key(user: User) -> None:
    write([(Activity, {"summary_id": "a1"}), (Activity, {"summary_id": "a2"})], raw_event_id=ledger_row(1))
    stats = write([], raw_event_id=ledger_row(2), deletions=[(Activity, {"summary_id": "a1"})])
    assert stats.deleted == 1
    assert list(Activity.objects.values_list("summary_id", flat=True)) == ["a2"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_of_the_same_records_end_with_the_newest_values() -> None:
    # given: two deliveries racing, each in its own transaction and connection
    User.objects.create(id="u1")
    events = {ts: ledger_row(ts) for ts in (1000, 2000)}
    errors: list[BaseException] = []

    def deliver(ordering_ts: int) -> None:
        try:
            for _ in range(20):
                with transaction.atomic():
                    write(
                        [daily(ordering_ts), daily(ordering_ts)],
                        raw_event_id=events[ordering_ts],
                        ordering_ts=ordering_ts,
                    )
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    # when
    threads = [threading.Thread(target=deliver, args=(ts,)) for ts in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then
    assert errors == []
    assert list(DailySummary.objects.values_list("steps", "ordering_ts")) == [(2000, 2000)]
