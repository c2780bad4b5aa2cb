"""Replay: one service for the endpoints and the command; lineage, guard, dry run, bulk."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import User
from ingest.models import DailySummary, RawEvent, RawEventState, TerraConnection
from ingest.services.dead_letter import raw_event_dead_letter
from tests.admin_ops.helpers import READ, WRITE, dead
from tests.ledger import process, store
from tests.terra import sample

pytestmark = [pytest.mark.django_db, pytest.mark.urls("admin_ops.urls")]

GARMIN_TERRA_USER = "b3e4a6c1-52d9-4f8e-a7b0-6c9d1e2f3a45"
OUR_USER = "user_2pQm9XkL4vN8rT1sYb6WcZ3eHdA"


def _dead_daily() -> RawEvent:
    """A real `daily` event that died while its connection (and user) did not exist."""
    raw_event = store(sample("daily"))
    assert raw_event_dead_letter(raw_event_id=raw_event.pk, error="retries_exhausted: no connection")
    raw_event.refresh_from_db()
    assert raw_event.state == RawEventState.DEAD
    return raw_event


def test_a_dead_event_replayed_after_its_cause_is_fixed_ends_processed_with_lineage(
    client: Client, django_capture_on_commit_callbacks
) -> None:
    raw_event = _dead_daily()
    # the cause is fixed: the user and their connection now exist
    user = User.objects.create(id=OUR_USER)
    TerraConnection.objects.create(user=user, terra_user_id=GARMIN_TERRA_USER, provider="GARMIN")

    with django_capture_on_commit_callbacks() as after_commit:
        response = client.post(f"/admin/raw-events/{raw_event.pk}/replay", headers=WRITE)

    assert response.status_code == 200, response.content
    assert response.json() == {"raw_event_id": raw_event.pk, "state": "received", "replay_count": 1}
    assert len(after_commit) == 1  # one publish batch, after the commit
    raw_event.refresh_from_db()
    assert (raw_event.state, raw_event.attempts, raw_event.process_error) == ("received", 0, None)
    assert (raw_event.dead_lettered_at, raw_event.lease_until) == (None, None)
    assert raw_event.last_replayed_by == "ops-alice"
    assert raw_event.last_replayed_at is not None

    raw_event = process(raw_event)

    assert (raw_event.state, raw_event.process_error, raw_event.attempts) == (RawEventState.PROCESSED, None, 1)
    assert (raw_event.replay_count, raw_event.last_replayed_by) == (1, "ops-alice")
    assert DailySummary.objects.filter(user=user, raw_event=raw_event).count() == 1


def test_replaying_again_counts_the_lineage(client: Client) -> None:
    raw_event = dead()
    client.post(f"/admin/raw-events/{raw_event.pk}/replay", headers=WRITE)
    RawEvent.objects.filter(pk=raw_event.pk).update(state=RawEventState.DEAD)
    response = client.post(f"/admin/raw-events/{raw_event.pk}/replay", headers={**WRITE, "x-admin-actor": "bob"})
    assert response.json()["replay_count"] == 2
    raw_event.refresh_from_db()
    assert raw_event.last_replayed_by == "bob"


def test_the_actor_defaults_when_the_header_is_absent(client: Client) -> None:
    raw_event = dead()
    client.post(f"/admin/raw-events/{raw_event.pk}/replay", headers={"x-admin-key": WRITE["x-admin-key"]})
    raw_event.refresh_from_db()
    assert raw_event.last_replayed_by == "admin-key"


@pytest.mark.parametrize("state", [RawEventState.RECEIVED, RawEventState.PROCESSING])
def test_a_queued_row_is_not_replayed(client: Client, state: str) -> None:
    raw_event = dead()
    RawEvent.objects.filter(pk=raw_event.pk).update(state=state)
    response = client.post(f"/admin/raw-events/{raw_event.pk}/replay", headers=WRITE)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_queued"
    raw_event.refresh_from_db()
    assert (raw_event.state, raw_event.replay_count) == (state, 0)


@pytest.mark.parametrize("state", [RawEventState.PROCESSED, RawEventState.SKIPPED, RawEventState.PARKED])
def test_terminal_and_parked_rows_can_be_replayed(client: Client, state: str) -> None:
    raw_event = dead()
    RawEvent.objects.filter(pk=raw_event.pk).update(state=state)
    response = client.post(f"/admin/raw-events/{raw_event.pk}/replay", headers=WRITE)
    assert response.status_code == 200
    assert response.json()["state"] == "received"


def test_an_unknown_row_is_404(client: Client) -> None:
    for path in ("/admin/raw-events/987654321/replay", "/admin/raw-events/987654321/replay?dry_run=true"):
        response = client.post(path, headers=WRITE)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "raw_event_not_found"


def test_dry_run_shows_the_rows_and_writes_nothing(client: Client, django_capture_on_commit_callbacks) -> None:
    raw_event = _dead_daily()
    user = User.objects.create(id=OUR_USER)
    TerraConnection.objects.create(user=user, terra_user_id=GARMIN_TERRA_USER, provider="GARMIN")

    with django_capture_on_commit_callbacks() as after_commit:
        response = client.post(f"/admin/raw-events/{raw_event.pk}/replay?dry_run=true", headers=WRITE)

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["raw_event_id"], body["dry_run"]) == (raw_event.pk, True)
    assert body["outcome"] == {"state": "processed", "reason": None}
    [row] = body["rows"]["daily_summary"]
    assert (row["user_id"], row["raw_event_id"], row["provider"]) == (OUR_USER, raw_event.pk, "GARMIN")
    assert after_commit == []
    assert DailySummary.objects.count() == 0
    before = raw_event
    raw_event = RawEvent.objects.get(pk=raw_event.pk)
    assert (raw_event.state, raw_event.process_error, raw_event.replay_count, raw_event.attempts) == (
        before.state,
        before.process_error,
        0,
        before.attempts,
    )


def test_dry_run_of_an_event_that_would_park_creates_nothing(client: Client) -> None:
    raw_event = _dead_daily()  # no user, no connection
    response = client.post(f"/admin/raw-events/{raw_event.pk}/replay?dry_run=true", headers=WRITE)
    assert response.json()["rows"] == {}
    assert response.json()["outcome"] == {"state": "parked", "reason": "no_connection_for_terra_user"}
    assert not TerraConnection.objects.exists()


def test_dry_run_is_a_write_endpoint(client: Client) -> None:
    raw_event = dead()
    response = client.post(f"/admin/raw-events/{raw_event.pk}/replay?dry_run=true", headers=READ)
    assert response.status_code == 403


def test_bulk_replay_by_filter_touches_exactly_the_matching_rows(
    client: Client, django_capture_on_commit_callbacks
) -> None:
    match_a = dead("sleep", error="retries_exhausted: OperationalError timeout", n=1)
    match_b = dead("sleep", error="retries_exhausted: operationalerror TIMEOUT again", n=2)
    other_type = dead("daily", error="retries_exhausted: OperationalError timeout", n=3)
    other_error = dead("sleep", error="bad_data: data is not a list", n=4)
    parked = dead("sleep", error="retries_exhausted: OperationalError timeout", n=5)
    RawEvent.objects.filter(pk=parked.pk).update(state=RawEventState.PARKED)

    with django_capture_on_commit_callbacks() as after_commit:
        response = client.post(
            "/admin/dlq/replay",
            {"event_type": "sleep", "error_contains": "operationalerror timeout"},
            content_type="application/json",
            headers=WRITE,
        )

    assert response.status_code == 200, response.content
    assert response.json() == {"matched": 2, "replayed": 2, "skipped": 0}
    assert len(after_commit) == 1
    states = dict(RawEvent.objects.values_list("pk", "state"))
    assert states[match_a.pk] == states[match_b.pk] == "received"
    assert states[other_type.pk] == states[other_error.pk] == "dead"
    assert states[parked.pk] == "parked"
    assert set(RawEvent.objects.filter(replay_count=1).values_list("pk", flat=True)) == {match_a.pk, match_b.pk}


def test_bulk_replay_by_since_uses_the_dead_letter_time(client: Client) -> None:
    old = dead(n=1)
    new = dead(n=2)
    RawEvent.objects.filter(pk=old.pk).update(dead_lettered_at="2020-01-01T00:00:00Z")
    response = client.post(
        "/admin/dlq/replay", {"since": "2024-01-01T00:00:00Z"}, content_type="application/json", headers=WRITE
    )
    assert response.json() == {"matched": 1, "replayed": 1, "skipped": 0}
    assert RawEvent.objects.get(pk=new.pk).state == "received"
    assert RawEvent.objects.get(pk=old.pk).state == "dead"


def test_bulk_replay_by_ids_skips_queued_rows_and_ignores_unknown_ids(client: Client) -> None:
    first, second, queued = dead(n=1), dead(n=2), dead(n=3)
    RawEvent.objects.filter(pk=queued.pk).update(state=RawEventState.PROCESSING)
    response = client.post(
        "/admin/dlq/replay",
        {"ids": [first.pk, second.pk, queued.pk, 987654321]},
        content_type="application/json",
        headers=WRITE,
    )
    assert response.json() == {"matched": 3, "replayed": 2, "skipped": 1}
    assert RawEvent.objects.get(pk=queued.pk).state == "processing"


@pytest.mark.parametrize(
    "body",
    [{}, {"ids": []}, {"ids": ["x"]}, {"ids": "1"}, {"since": "yesterday"}, {"event_type": 5}, [1, 2]],
)
def test_bulk_replay_refuses_a_missing_or_malformed_selection(client: Client, body: object) -> None:
    dead()
    response = client.post("/admin/dlq/replay", body, content_type="application/json", headers=WRITE)
    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"invalid_request", "invalid_field"}
    assert not RawEvent.objects.filter(replay_count__gt=0).exists()
