"""The console's home (the pipeline at a glance), triage by dead-letter group, and a raw event's
page that opens on what an operator acts on."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from admin_ops.models import AuditRecord, TraceEvent
from admin_ops.pipeline import dead_letter_groups, error_signature, signature_key
from ingest.models import DailySummary, RawEvent, RawEventState, TerraConnection
from tests.admin_ops.helpers import dead
from tests.ledger import store
from tests.terra import body_of, sample

pytestmark = pytest.mark.django_db

STAFF = "ops-erin"
GARMIN_TERRA_USER = "b3e4a6c1-52d9-4f8e-a7b0-6c9d1e2f3a45"  # the daily sample's Terra user


@pytest.fixture
def staff() -> AbstractBaseUser:
    return get_user_model().objects.create_superuser(STAFF, "erin@example.com", "not-used")


@pytest.fixture
def console(client: Client, staff: AbstractBaseUser) -> Client:
    client.force_login(staff)
    return client


def _group_url(signature: str, suffix: str = "") -> str:
    return f"/console/pipeline/dead-letters/{signature_key(signature)}/{suffix}"


# Error signatures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            "retries_exhausted: OperationalError: could not connect to server (attempt 3)",
            "retries_exhausted: OperationalError: could not connect to server (attempt 7)",
        ),
        ("bad_data: data[0].metadata.start_time is missing", "bad_data: data[12].metadata.start_time is missing"),
        ("bad_data: unknown provider 'GARMIN'", 'bad_data: unknown provider "OURA"'),
        (
            "parked: no connection for b3e4a6c1-52d9-4f8e-a7b0-6c9d1e2f3a45",
            "parked: no connection for 0f8e1c2d-1111-4f8e-a7b0-000000000000",
        ),
        ("lab upload req_01KABCDEFGHJKMNPQRSTVWXYZ0 not found", "lab upload req_01KZZZZZZZZZZZZZZZZZZZZZZZ not found"),
        (
            "payload sha 9f86d081884c7d659a2feaa0c55ad015 differs",
            "payload sha 0cc175b9c0f1b6a831c399e269772661 differs",
        ),
    ],
)
def test_errors_that_differ_only_in_ids_numbers_or_quoted_values_share_a_signature(first: str, second: str) -> None:
    assert error_signature(first) == error_signature(second)


def test_different_errors_keep_different_signatures() -> None:
    assert error_signature("bad_data: data[0].metadata.start_time is missing") != error_signature(
        "bad_data: data[0].metadata.end_time is missing"
    )
    assert error_signature(None) == "(no error recorded)"


# The glance ---------------------------------------------------------------------------------------


def test_the_home_page_shows_the_pipeline_at_a_glance(console: Client, redis_client: object) -> None:
    # given: two events waiting (one for 20 minutes), three dead of one parser error, one of another
    waiting = store(body_of({"type": "daily", "user": {"user_id": "tu-wait"}, "data": [], "n": 1}))
    RawEvent.objects.filter(pk=waiting.pk).update(queued_at=timezone.now() - timedelta(minutes=20))
    store(body_of({"type": "sleep", "user": {"user_id": "tu-wait"}, "data": [], "n": 2}))
    for n in range(3):
        dead("daily", n=n, error=f"bad_data: data[{n}].metadata.start_time is missing")
    dead("sleep", n=9, error="retries_exhausted: OperationalError: timeout after 30 s")

    response = console.get("/console/")

    assert response.status_code == 200
    glance = response.context["glance"]
    assert glance.received_last_hour == 6
    assert glance.by_state_24h["dead"] == 4
    assert glance.by_state_24h["received"] == 2
    assert glance.backlog == 2
    assert 19 * 60 < glance.oldest_waiting_age < 30 * 60
    assert glance.queue_depth is not None
    assert [(g.count, g.signature) for g in glance.dead.groups] == [
        (3, "bad_data: data[<n>].metadata.start_time is missing"),
        (1, "retries_exhausted: OperationalError: timeout after <n> s"),
    ]
    assert not glance.healthy
    assert any("oldest waiting event has waited 20 min" in problem for problem in glance.problems)
    body = response.content.decode()
    assert "Pipeline at a glance" in body
    assert "bad_data: data[&lt;n&gt;].metadata.start_time is missing" in body
    assert _group_url("bad_data: data[<n>].metadata.start_time is missing") in body
    assert body.index("Pipeline at a glance") < body.index("Raw events")  # above the app list


def test_a_quiet_pipeline_is_reported_healthy(console: Client, redis_client: object) -> None:
    response = console.get("/console/")

    assert response.context["glance"].healthy
    assert "Healthy" in response.content.decode()


def test_the_home_page_never_counts_the_whole_ledger(console: Client, redis_client: object) -> None:
    dead("daily", n=1)

    with CaptureQueriesContext(connection) as queries:
        console.get("/console/")

    ledger = [q["sql"] for q in queries.captured_queries if "raw_events" in q["sql"]]
    assert len(ledger) >= 4
    for sql in ledger:
        assert "WHERE" in sql.upper(), sql  # a range of an index, never the whole table


def test_the_home_page_says_when_redis_does_not_answer(console: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("admin_ops.pipeline.queue_depths", lambda: (None, None))

    response = console.get("/console/")

    assert response.context["glance"].queue_depth is None
    assert "Redis is not answering" in response.content.decode()


def test_dead_letters_older_than_the_window_are_not_grouped() -> None:
    old = dead("daily", n=1, error="bad_data: old")
    RawEvent.objects.filter(pk=old.pk).update(dead_lettered_at=timezone.now() - timedelta(hours=30))
    dead("daily", n=2, error="bad_data: new")

    assert [g.signature for g in dead_letter_groups(hours=24).groups] == ["bad_data: new"]
    assert {g.signature for g in dead_letter_groups(hours=48).groups} == {"bad_data: new", "bad_data: old"}


# Triage by group ----------------------------------------------------------------------------------


SIGNATURE = "retries_exhausted: no connection for <id>"


def _dead_daily_group() -> list[RawEvent]:
    """The daily sample and a second day of it, dead of the same error naming different users;
    the connection now exists, so a replay would write their days."""
    rows = []
    for name in ("daily", "daily_two_days"):
        raw_event = store(sample(name))
        RawEvent.objects.filter(pk=raw_event.pk).update(
            state=RawEventState.DEAD,
            process_error=f"retries_exhausted: no connection for {GARMIN_TERRA_USER}",
            dead_lettered_at=timezone.now(),
            attempts=6,
        )
        rows.append(raw_event)
    user = User.objects.create(id="user_triage")
    TerraConnection.objects.create(user=user, terra_user_id=GARMIN_TERRA_USER, provider="GARMIN")
    return rows


def test_a_group_lists_its_events(console: Client) -> None:
    rows = _dead_daily_group()
    dead("sleep", n=5, error="something else")

    response = console.get(_group_url(SIGNATURE))

    assert response.status_code == 200
    assert [row.pk for row in response.context["rows"]] == sorted((row.pk for row in rows), reverse=True)
    assert "Replay all 2" in response.content.decode()


def test_a_groups_dry_run_shows_the_rows_a_replay_would_write_and_keeps_nothing(console: Client) -> None:
    rows = _dead_daily_group()

    response = console.get(_group_url(SIGNATURE, "dry-run/"))

    assert response.status_code == 200
    results = response.context["results"]
    assert {result["row"].pk for result in results} == {row.pk for row in rows}
    assert all(result["state"] == RawEventState.PROCESSED for result in results)
    assert all(any(t["table"] == "daily_summary" for t in result["tables"]) for result in results)
    assert "daily_summary" in response.content.decode()
    assert DailySummary.objects.count() == 0
    assert set(RawEvent.objects.filter(pk__in=[r.pk for r in rows]).values_list("state", flat=True)) == {"dead"}


def test_replaying_a_group_asks_for_confirmation_first(console: Client) -> None:
    rows = _dead_daily_group()

    response = console.get(_group_url(SIGNATURE, "replay/"))

    assert response.status_code == 200
    assert "Yes, replay 2" in response.content.decode()
    assert set(RawEvent.objects.filter(pk__in=[r.pk for r in rows]).values_list("state", flat=True)) == {"dead"}
    assert not AuditRecord.objects.exists()


def test_replaying_a_group_puts_every_event_back_and_records_who(
    console: Client, django_capture_on_commit_callbacks
) -> None:
    rows = _dead_daily_group()
    other = dead("sleep", n=5, error="something else")

    with django_capture_on_commit_callbacks() as after_commit:
        response = console.post(_group_url(SIGNATURE, "replay/"), {"post": "yes", "hours": "24"})

    assert response.status_code == 302
    assert len(after_commit) == 1  # one publish for the group
    for row in rows:
        row.refresh_from_db()
        assert (row.state, row.replay_count, row.last_replayed_by) == (RawEventState.RECEIVED, 1, STAFF)
    other.refresh_from_db()
    assert other.state == RawEventState.DEAD
    record = AuditRecord.objects.get()
    assert (record.actor, record.action, record.raw_event_count) == (STAFF, "raw_events_replay", 2)
    assert sorted(record.raw_event_ids) == sorted(row.pk for row in rows)
    assert record.details["signature"] == SIGNATURE


def test_marking_a_group_skipped_gives_up_on_every_event_and_records_who(console: Client) -> None:
    rows = _dead_daily_group()

    confirm = console.get(_group_url(SIGNATURE, "skip/"))
    response = console.post(_group_url(SIGNATURE, "skip/"), {"post": "yes"})

    assert "Yes, mark 2 skipped" in confirm.content.decode()
    assert response.status_code == 302
    states = set(RawEvent.objects.filter(pk__in=[r.pk for r in rows]).values_list("state", "process_error"))
    assert states == {(RawEventState.SKIPPED, "skipped:manual")}
    record = AuditRecord.objects.get()
    assert (record.action, record.raw_event_count, record.details["via"]) == ("raw_events_mark_skipped", 2, "console")
    assert "raw_events_mark_skipped" in console.get("/console/admin_ops/auditrecord/").content.decode()


def test_a_group_that_is_gone_sends_the_operator_home(console: Client) -> None:
    response = console.get(_group_url("no such error"))

    assert response.status_code == 302
    assert response["Location"] == "/console/"


def test_a_view_only_operator_cannot_replay_a_group(client: Client) -> None:
    from django.contrib.auth.models import Permission

    _dead_daily_group()
    viewer = get_user_model().objects.create_user("ops-viewer", "v@example.com", "not-used", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_rawevent"))
    client.force_login(viewer)

    assert client.get(_group_url(SIGNATURE)).status_code == 200
    assert client.post(_group_url(SIGNATURE, "replay/"), {"post": "yes"}).status_code == 403
    assert RawEvent.objects.filter(state=RawEventState.DEAD).count() == 2


# A raw event's page -------------------------------------------------------------------------------


def test_a_raw_events_page_opens_with_state_error_attempts_actions_and_journey_before_the_payload(
    console: Client,
) -> None:
    raw_event = dead("daily", n=1, error="bad_data: data[0].metadata.start_time is missing")
    now = timezone.now()
    TraceEvent.objects.create(ts=now, request_id="req_test", level="info", event="webhook_start")
    TraceEvent.objects.create(ts=now, raw_event_id=raw_event.pk, level="error", event="normalize_dead_lettered")
    TraceEvent.objects.create(ts=now, request_id="req_unrelated", level="info", event="unrelated_step")

    response = console.get(f"/console/ingest/rawevent/{raw_event.pk}/change/")

    assert response.status_code == 200
    body = response.content.decode()
    positions = [
        body.index('id="raw-event-state"'),
        body.index("bad_data: data[0].metadata.start_time is missing"),
        body.index('id="raw-event-attempts"'),
        body.index('id="raw-event-replay"'),
        body.index('id="raw-event-skip"'),
        body.index('id="raw-event-journey"'),
        body.index("webhook_start"),
        body.index("normalize_dead_lettered"),
        body.index("field-pretty_payload"),
    ]
    assert positions == sorted(positions)
    assert "unrelated_step" not in body


def test_a_processed_raw_event_offers_no_mark_skipped(console: Client) -> None:
    raw_event = dead("daily", n=1)
    RawEvent.objects.filter(pk=raw_event.pk).update(state=RawEventState.PROCESSED)

    body = console.get(f"/console/ingest/rawevent/{raw_event.pk}/change/").content.decode()

    assert 'id="raw-event-replay"' in body
    assert 'id="raw-event-skip"' not in body


def test_a_raw_events_dry_run_page_shows_what_a_replay_would_do(console: Client) -> None:
    raw_event = dead("daily", n=1, error="bad_data: boom")

    response = console.get(f"/console/pipeline/raw-events/{raw_event.pk}/dry-run/")

    assert response.status_code == 200
    assert response.context["results"][0]["row"].pk == raw_event.pk
    assert RawEvent.objects.get(pk=raw_event.pk).state == RawEventState.DEAD
