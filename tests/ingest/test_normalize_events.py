"""Data events through the worker's service into typed tables: redeliveries, order,
nulls, malformed shapes, and every sample processed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from accounts.models import User
from ingest.models import (
    Activity,
    Athlete,
    BodyMeasurement,
    DailySummary,
    MenstruationDay,
    NutritionDaily,
    RawEvent,
    RawEventState,
    SleepSession,
    TerraConnection,
)
from ingest.services.processing import ProcessStatus, raw_event_process
from tests.ledger import deliver
from tests.terra import body_of, sample

pytestmark = pytest.mark.django_db

TERRA_USERS = {
    "b3e4a6c1-52d9-4f8e-a7b0-6c9d1e2f3a45": "GARMIN",
    "7c0d2f1e-3b8a-4e5d-9f60-1a2b3c4d5e6f": "OURA",
    "e91f3c57-0a6d-4b2e-8c19-5d7f40a2b816": "WITHINGS",
    "4a8b2c6d-9e1f-4307-b5a6-c8d9e0f1a2b3": "MYFITNESSPAL",
    "0f6e5d4c-3b2a-4190-8e7d-6c5b4a392817": "APPLE",
    "c5d6e7f8-0a1b-4c2d-8e3f-4a5b6c7d8e9f": "FITBIT",
}


@pytest.fixture(autouse=True)
def connected() -> User:
    user = User.objects.create(id="u1")
    for terra_user_id, provider in TERRA_USERS.items():
        TerraConnection.objects.create(user=user, terra_user_id=terra_user_id, provider=provider)
    return user


def daily_with_steps(steps: Any) -> bytes:
    payload = json.loads(sample("daily"))
    payload["data"][0]["distance_data"]["steps"] = steps
    return body_of(payload)


@pytest.mark.parametrize(
    ("name", "model", "count"),
    [
        ("daily", DailySummary, 1),
        ("daily_two_days", DailySummary, 2),
        ("sleep", SleepSession, 1),
        ("nutrition", NutritionDaily, 1),
        ("menstruation", MenstruationDay, 1),
        ("activity", Activity, 1),
        ("unicode_odd", Activity, 1),
        ("body", BodyMeasurement, 13),
        ("athlete", Athlete, 1),
        ("unicode_lone_surrogate", Athlete, 1),
    ],
)
def test_each_sample_is_processed_into_its_rows_for_the_connected_user(name: str, model: type, count: int) -> None:
    raw_event = deliver(sample(name))
    assert (raw_event.state, raw_event.process_error, raw_event.user_id) == (RawEventState.PROCESSED, None, "u1")
    rows = model.objects.all()
    assert rows.count() == count
    payload = json.loads(sample(name))
    for row in rows:
        assert (row.user_id, row.provider, row.terra_user_id) == (
            "u1",
            payload["user"]["provider"],
            raw_event.terra_user_id,
        )
        assert row.raw_event_id == raw_event.pk


def test_processing_the_same_event_twice_gives_the_same_rows() -> None:
    raw_event = deliver(sample("daily_two_days"))
    before = list(DailySummary.objects.values().order_by("id"))
    assert raw_event_process(raw_event_id=raw_event.pk).status == ProcessStatus.NOT_CLAIMED
    RawEvent.objects.filter(pk=raw_event.pk).update(state=RawEventState.RECEIVED)  # a replay
    assert raw_event_process(raw_event_id=raw_event.pk).status == ProcessStatus.DONE
    assert list(DailySummary.objects.values().order_by("id")) == before


def test_a_newer_summary_replaces_an_older_one_and_the_older_redelivered_does_not_win() -> None:
    deliver(daily_with_steps(1000), ordering_ts=1_764_000_000_000)
    deliver(daily_with_steps(9000), ordering_ts=1_764_000_600_000)
    assert DailySummary.objects.get().steps == 9000
    # the older copy, redelivered by Terra after the newer one
    older_again = deliver(daily_with_steps(1000) + b" ", ordering_ts=1_764_000_000_000)
    assert older_again.state == RawEventState.PROCESSED
    assert DailySummary.objects.get().steps == 9000


def test_numbers_as_strings_are_numbers_and_non_numbers_become_null_keeping_the_row() -> None:
    deliver(daily_with_steps("12345"))
    assert DailySummary.objects.get().steps == 12345
    deliver(daily_with_steps("many"), ordering_ts=2**40)
    row = DailySummary.objects.get()
    assert row.steps is None
    assert row.resting_hr_bpm is not None  # the rest of the row is kept


def test_nulls_everywhere_give_a_row_of_nulls() -> None:
    raw_event = deliver(sample("daily_nulls"))
    assert raw_event.state == RawEventState.PROCESSED
    row = DailySummary.objects.get()
    assert row.steps is None
    assert row.sleep_score is None


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"data": {"not": "a list"}}, "bad_data: data is missing or not a list"),
        ({"data": ["not an object"]}, "bad_data: data[0] is not an object"),
        ({"data": [{"metadata": {}}]}, "bad_data: metadata.start_time is missing or not an ISO 8601 time"),
    ],
)
def test_malformed_shapes_are_dead_lettered_with_a_message_naming_the_field(payload: dict, error: str) -> None:
    body = body_of({"type": "daily", "user": {"user_id": "b3e4a6c1-52d9-4f8e-a7b0-6c9d1e2f3a45"}, **payload})
    raw_event = deliver(body)
    assert (raw_event.state, raw_event.process_error, raw_event.attempts) == (RawEventState.DEAD, error, 1)
    assert not DailySummary.objects.exists()


def test_an_empty_data_list_is_processed_writing_nothing() -> None:
    assert deliver(sample("activity_empty_data")).state == RawEventState.PROCESSED
    assert not Activity.objects.exists()


def test_every_table_is_empty_before_the_first_event() -> None:
    for model in (DailySummary, SleepSession, Activity, BodyMeasurement, NutritionDaily, MenstruationDay, Athlete):
        assert not model.objects.exists()
