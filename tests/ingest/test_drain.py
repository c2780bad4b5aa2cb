"""The five-minute drain: what it selects, in what order, how many, and what it kills."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from ingest.models import RawEvent, RawEventState
from ingest.services.drain import raw_event_list_stuck, raw_events_drain
from tests.beat import installed_beat_task
from tests.queues import queued_messages, queued_task_kwargs

pytestmark = pytest.mark.django_db

DAY = 24 * 3600


def row(
    n: int, *, state: str = RawEventState.RECEIVED, queued_ago: timedelta = timedelta(minutes=10), **fields
) -> RawEvent:
    now = timezone.now()
    return RawEvent.objects.create(
        event_type="sleep",
        terra_user_id=f"u{n}",
        dedup_key=f"{n:064d}",
        payload="{}",
        state=state,
        queued_at=now - queued_ago,
        received_at=now - queued_ago,
        **fields,
    )


def stuck(limit: int = 500) -> list[int]:
    return raw_event_list_stuck(limit=limit, window_seconds=DAY)


def test_received_rows_are_selected() -> None:
    received = row(1)
    assert stuck() == [received.pk]


def test_processing_rows_whose_lease_ran_out_are_selected() -> None:
    expired = row(1, state=RawEventState.PROCESSING, lease_until=timezone.now() - timedelta(seconds=1))
    row(2, state=RawEventState.PROCESSING, lease_until=timezone.now() + timedelta(minutes=5))
    assert stuck() == [expired.pk]


@pytest.mark.parametrize(
    "state", [RawEventState.PROCESSED, RawEventState.SKIPPED, RawEventState.PARKED, RawEventState.DEAD]
)
def test_finished_parked_and_dead_rows_are_never_selected(state: str) -> None:
    row(1, state=state, lease_until=timezone.now() - timedelta(hours=1))
    assert stuck() == []


def test_rows_are_selected_oldest_queued_first_up_to_the_limit() -> None:
    newest = row(1, queued_ago=timedelta(minutes=1))
    oldest = row(2, queued_ago=timedelta(hours=3))
    middle = row(3, queued_ago=timedelta(minutes=30))
    assert stuck() == [oldest.pk, middle.pk, newest.pk]
    assert stuck(limit=2) == [oldest.pk, middle.pk]


def test_rows_queued_more_than_a_day_ago_are_not_selected() -> None:
    row(1, queued_ago=timedelta(hours=24, minutes=1))
    assert stuck() == []


def test_a_drain_publishes_the_selected_rows_to_terra_events_each_with_its_own_request_id(redis_client) -> None:
    # given
    ids = [row(n, request_id=f"req_{n}").pk for n in range(3)]
    # when
    result = raw_events_drain(limit=500, window_seconds=DAY)
    # then
    assert (result.selected, result.published, result.dead_lettered) == (3, 3, 0)
    published = queued_task_kwargs(redis_client, "terra-events")
    assert sorted((kwargs["raw_event_id"], kwargs["request_id"]) for kwargs in published) == [
        (raw_event_id, f"req_{n}") for n, raw_event_id in enumerate(ids)
    ]


def test_a_drain_dead_letters_rows_unprocessed_for_a_day_as_stale(
    redis_client, django_capture_on_commit_callbacks
) -> None:
    # given
    stale = row(1, queued_ago=timedelta(hours=25))
    stale_processing = row(
        2, state=RawEventState.PROCESSING, queued_ago=timedelta(hours=30), lease_until=timezone.now()
    )
    fresh = row(3)
    # when
    with django_capture_on_commit_callbacks(execute=True):
        result = raw_events_drain(limit=500, window_seconds=DAY)
    # then
    assert result.dead_lettered == 2
    for raw_event in (stale, stale_processing):
        raw_event.refresh_from_db()
        assert (raw_event.state, raw_event.process_error) == (RawEventState.DEAD, "stale_unprocessed")
        assert raw_event.dead_lettered_at is not None
    fresh.refresh_from_db()
    assert fresh.state == RawEventState.RECEIVED
    # a copy of each for operators' tools on terra-events-dlq
    copies = queued_messages(redis_client, "terra-events-dlq")
    assert sorted(c["raw_event_id"] for c in copies) == sorted([stale.pk, stale_processing.pk])
    assert {c["process_error"] for c in copies} == {"stale_unprocessed"}


def test_a_drain_with_nothing_stuck_publishes_nothing(redis_client) -> None:
    row(1, state=RawEventState.PROCESSED)
    assert raw_events_drain(limit=500, window_seconds=DAY).selected == 0
    assert redis_client.llen("terra-events") == 0


def test_beat_schedules_the_drain_every_five_minutes() -> None:
    task = installed_beat_task("drain_stuck_events")
    assert (task.task, task.queue, task.enabled) == ("ingest.drain_stuck_events", "amy", True)
    assert (task.crontab.minute, task.crontab.hour, str(task.crontab.timezone)) == ("*/5", "*", "UTC")
