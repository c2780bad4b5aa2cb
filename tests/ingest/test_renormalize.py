"""renormalize: stored ledger rows through today's normalizers, idempotently, after a parser fix."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from accounts.models import User
from ingest.classify import classify
from ingest.models import DailySummary, RawEvent, RawEventState, SleepSession, TerraConnection
from ingest.normalizers import NORMALIZERS, daily
from ingest.normalizers.base import ParsedRows, data_event
from ingest.services.processing import raw_event_process
from ingest.services.renormalize import raw_events_renormalize, raw_events_to_renormalize
from ingest.services.webhook import dedup_key_for, raw_event_insert
from tests.terra import sample

pytestmark = pytest.mark.django_db

GARMIN = "b3e4a6c1-52d9-4f8e-a7b0-6c9d1e2f3a45"
OURA = "7c0d2f1e-3b8a-4e5d-9f60-1a2b3c4d5e6f"


@pytest.fixture
def connected() -> User:
    user = User.objects.create(id="u1")
    TerraConnection.objects.create(user=user, terra_user_id=GARMIN, provider="GARMIN")
    TerraConnection.objects.create(user=user, terra_user_id=OURA, provider="OURA")
    return user


def processed_event(name: str) -> RawEvent:
    body = sample(name)
    raw_event_id = raw_event_insert(
        body_text=body.decode(),
        dedup_key=dedup_key_for(body),
        classification=classify(json.loads(body)),
        request_id="r",
    )
    raw_event_process(raw_event_id=raw_event_id)
    return RawEvent.objects.get(pk=raw_event_id)


def steps_by_date() -> dict[str, int]:
    return {str(d): s for d, s in DailySummary.objects.values_list("date", "steps")}


def test_renormalizing_unchanged_parsers_changes_nothing(connected: User) -> None:
    processed_event("daily_two_days")
    before = list(DailySummary.objects.values_list("id", "steps", "updated_at").order_by("id"))
    summary = raw_events_renormalize(raw_events_to_renormalize())
    assert (summary.events, summary.by_state, summary.failed) == (1, {"processed": 1}, 0)
    assert (summary.written.inserted, summary.written.changed, summary.written.unchanged) == (0, 0, 2)
    assert list(DailySummary.objects.values_list("id", "steps", "updated_at").order_by("id")) == before


def test_renormalizing_after_a_mapping_change_updates_exactly_the_affected_rows(connected: User, monkeypatch) -> None:
    # given: two days stored, then a parser fix that changes one day's steps only
    processed_event("daily_two_days")
    before = steps_by_date()
    first_day = min(before)

    def fixed_parse(payload: dict[str, Any]) -> ParsedRows:
        parsed = daily.parse(payload)
        for _, row in parsed.rows:
            if str(row["date"]) == first_day:
                row["steps"] += 1
        return parsed

    monkeypatch.setitem(NORMALIZERS, "daily", data_event(fixed_parse))
    # when
    summary = raw_events_renormalize(raw_events_to_renormalize())
    # then
    assert (summary.written.inserted, summary.written.changed, summary.written.unchanged) == (0, 1, 1)
    assert steps_by_date() == {**before, first_day: before[first_day] + 1}


def test_a_dry_run_reports_the_changes_and_writes_nothing(connected: User, monkeypatch) -> None:
    processed_event("daily")
    before = steps_by_date()

    def doubled(payload: dict[str, Any]) -> ParsedRows:
        parsed = daily.parse(payload)
        for _, row in parsed.rows:
            row["steps"] *= 2
        return parsed

    monkeypatch.setitem(NORMALIZERS, "daily", data_event(doubled))
    summary = raw_events_renormalize(raw_events_to_renormalize(), dry_run=True)
    assert summary.written.changed == 1
    assert steps_by_date() == before


def test_a_dead_lettered_event_that_now_normalizes_becomes_processed(connected: User) -> None:
    raw_event = processed_event("daily")
    DailySummary.objects.all().delete()
    RawEvent.objects.filter(pk=raw_event.pk).update(state=RawEventState.DEAD, process_error="bad_data: old parser bug")
    summary = raw_events_renormalize(raw_events_to_renormalize())
    raw_event.refresh_from_db()
    assert (raw_event.state, raw_event.process_error) == (RawEventState.PROCESSED, None)
    assert summary.written.inserted == 1


def test_rows_held_by_a_worker_and_lifecycle_events_are_not_renormalized(connected: User) -> None:
    processed_event("daily")
    waiting = processed_event("sleep")
    RawEvent.objects.filter(pk=waiting.pk).update(state=RawEventState.RECEIVED)
    processed_event("deauth")
    assert list(raw_events_to_renormalize().values_list("event_type", flat=True)) == ["daily"]


def test_filters_select_by_type_and_by_user(connected: User) -> None:
    processed_event("daily")
    processed_event("sleep")
    assert list(raw_events_to_renormalize(event_type="sleep").values_list("event_type", flat=True)) == ["sleep"]
    assert raw_events_to_renormalize(user_id="u1").count() == 2
    assert raw_events_to_renormalize(user_id="somebody-else").count() == 0


def test_the_command_prints_a_summary(connected: User) -> None:
    processed_event("sleep")
    out = StringIO()
    call_command("renormalize", "--type", "sleep", stdout=out, stderr=StringIO())
    assert "1 events renormalized" in out.getvalue()
    assert "unchanged          1" in out.getvalue()
    assert SleepSession.objects.count() == 1


def test_the_command_with_nothing_to_do_says_so(db) -> None:
    out = StringIO()
    call_command("renormalize", "--since", "2026-01-01", "--dry-run", stdout=out, stderr=StringIO())
    assert out.getvalue().strip() == "nothing to renormalize"
