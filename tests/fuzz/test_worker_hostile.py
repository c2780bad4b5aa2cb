"""Hostile bodies through the whole path on a real worker: webhook → ledger → Redis →
Celery. A body that can never normalize ends `dead` after one delivery with a `bad_data:` error a
person can read; one with an unusable value is processed with that value null; the worker keeps
serving afterwards."""

from __future__ import annotations

import json

import pytest

from accounts.models import User
from ingest.models import MenstruationDay, RawEvent, RawEventState, TerraConnection
from tests.conftest import PostWebhook
from tests.fuzz.test_normalizers_fuzz import readable
from tests.live import CeleryWorker, wait_for
from tests.terra import sample

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

TERRA_USER = "t-fuzz-worker"
FINAL = (RawEventState.PROCESSED, RawEventState.SKIPPED, RawEventState.PARKED, RawEventState.DEAD)
USER = f'"user": {{"user_id": "{TERRA_USER}", "provider": "GARMIN", "reference_id": "u-fuzz"}}'
DEEP = "[" * 800 + "]" * 800

# JSON text as a hostile sender writes it: tokens json.dumps never emits, lone surrogates, depth.
NEVER_NORMALIZES = {
    "data-not-a-list": f'{{"type": "daily", {USER}, "data": "nope"}}',
    "nan-start-time": f'{{"type": "sleep", {USER}, "data": [{{"metadata": {{"start_time": NaN}}}}]}}',
    "infinity-summary-id": f'{{"type": "activity", {USER}, "data": [{{"metadata": {{"summary_id": -Infinity}}}}]}}',
    "lone-surrogate-time": f'{{"type": "body", {USER}, "data": [{{"metadata": {{"start_time": "\\ud800"}}}}]}}',
    "year-0-in-utc": f'{{"type": "daily", {USER}, "data": [{{"metadata": {{"start_time": "0001-01-01T00:00:00+14:00"}}}}]}}',
    "deep-nesting": f'{{"type": "nutrition", {USER}, "data": {DEEP}}}',
    "huge-int-record": f'{{"type": "menstruation", {USER}, "data": [{"9" * 400}]}}',
    "athlete-a-list": f'{{"type": "athlete", {USER}, "athlete": [1e999]}}',
}


def wait_final(raw_event_id: int, timeout: float = 30) -> RawEvent:
    wait_for(lambda: RawEvent.objects.get(pk=raw_event_id).state in FINAL, timeout, f"raw_event {raw_event_id}")
    return RawEvent.objects.get(pk=raw_event_id)


@pytest.fixture
def connected() -> TerraConnection:
    """A known Terra user, so that data events are normalized rather than parked."""
    return TerraConnection.objects.create(user=User.objects.create(id="u-fuzz"), terra_user_id=TERRA_USER)


def test_hostile_bodies_are_dead_lettered_once_with_a_readable_error_and_the_worker_keeps_serving(
    live_worker: CeleryWorker, post_webhook: PostWebhook, connected: TerraConnection
) -> None:
    # given: every hostile body was accepted into the ledger
    ids = {}
    for name, text in NEVER_NORMALIZES.items():
        response = post_webhook(text.encode())
        assert response.status_code == 200, (name, response.content)
        ids[name] = response.json()["raw_event_id"]
    # then: each ends dead after one delivery, its error naming what was wrong
    for name, raw_event_id in ids.items():
        row = wait_final(raw_event_id)
        assert (row.state, row.attempts) == (RawEventState.DEAD, 1), (name, row.state, row.process_error)
        assert row.process_error.startswith("bad_data: "), (name, row.process_error)
        assert readable(row.process_error), name
    # and the worker still serves ordinary events
    healthy = wait_final(post_webhook(sample("healthcheck")).json()["raw_event_id"])
    assert healthy.state == RawEventState.SKIPPED
    assert live_worker.is_running()


def test_a_count_past_32_bits_is_stored_as_null_not_retried(
    live_worker: CeleryWorker, post_webhook: PostWebhook, connected: TerraConnection
) -> None:
    # Before the fix PostgreSQL refused the integer, and the event went through five retries to
    # a `retries_exhausted: DataError` dead letter.
    payload = json.loads(sample("menstruation"))
    payload["user"]["user_id"] = TERRA_USER
    payload["data"][0]["menstruation_data"]["period_length_days"] = 2**40
    row = wait_final(post_webhook(json.dumps(payload).encode()).json()["raw_event_id"])
    assert (row.state, row.attempts) == (RawEventState.PROCESSED, 1), row.process_error
    day = MenstruationDay.objects.get(user_id="u-fuzz")
    assert (day.period_length_days, day.day_in_cycle) == (None, 3)
