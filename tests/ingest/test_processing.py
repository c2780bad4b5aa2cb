"""The worker's service, called directly: claims, outcomes, retries and dead letters."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import User
from ingest.models import ConnectionStatus, RawEvent, RawEventState, TerraConnection
from ingest.services.processing import ProcessStatus, raw_event_claim, raw_event_process, retry_countdown
from tests.ledger import process, store
from tests.terra import body_of, sample

pytestmark = pytest.mark.django_db

OURA_TERRA_USER = "7c0d2f1e-3b8a-4e5d-9f60-1a2b3c4d5e6f"
OUR_USER = "user_2pQm9XkL4vN8rT1sYb6WcZ3eHdA"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("auth_cancelled", "skipped:auth_cancelled"),
        ("auth_error", "skipped:auth"),
        ("google_no_datasource", "skipped:google_no_datasource"),
        ("healthcheck", "skipped:healthcheck"),
        ("large_request_processing", "skipped:large_request_processing"),
        ("large_request_sending", "skipped:large_request_sending"),
        ("rate_limit_hit", "skipped:rate_limit_hit"),
    ],
)
def test_informational_events_are_marked_skipped_with_their_type(name: str, reason: str) -> None:
    raw_event = process(store(sample(name)))
    assert (raw_event.state, raw_event.process_error, raw_event.attempts) == (RawEventState.SKIPPED, reason, 1)
    assert raw_event.processed_at is not None
    assert raw_event.lease_until is None


@pytest.mark.parametrize("event_type", ["hormone", "planned_workout", "health_observation", "processing", "brand_new"])
def test_types_we_do_not_store_are_marked_skipped_with_their_type(event_type: str) -> None:
    raw_event = process(store(body_of({"type": event_type, "user": {"user_id": "u1"}, "data": []})))
    assert (raw_event.state, raw_event.process_error) == (RawEventState.SKIPPED, f"skipped:{event_type}")


def test_an_unknown_shape_is_marked_skipped_unknown_shape() -> None:
    raw_event = process(store(body_of({"hello": "world"})))
    assert (raw_event.state, raw_event.process_error) == (RawEventState.SKIPPED, "skipped:unknown_shape")


def test_auth_success_creates_the_user_and_an_active_connection() -> None:
    raw_event = process(store(sample("auth_success")))
    assert raw_event.state == RawEventState.PROCESSED
    assert raw_event.user_id == OUR_USER
    connection = TerraConnection.objects.get(terra_user_id=OURA_TERRA_USER)
    assert connection.user_id == OUR_USER
    assert (connection.provider, connection.status) == ("OURA", ConnectionStatus.ACTIVE)
    assert connection.scopes == "daily,heartrate,personal,session,sleep,spo2,workout"
    assert connection.last_webhook_at is not None


def test_auth_success_reactivates_a_deauthorized_connection() -> None:
    user = User.objects.create(id=OUR_USER)
    TerraConnection.objects.create(
        user=user, terra_user_id=OURA_TERRA_USER, status=ConnectionStatus.DEAUTHORIZED, disconnected_at=timezone.now()
    )
    process(store(sample("auth_success")))
    connection = TerraConnection.objects.get(terra_user_id=OURA_TERRA_USER)
    assert (connection.status, connection.disconnected_at) == (ConnectionStatus.ACTIVE, None)


def test_auth_success_unparks_the_events_waiting_for_its_connection(django_capture_on_commit_callbacks) -> None:
    # given: an event parked for the Terra user before the connection existed
    waiting = store(body_of({"type": "test.sleep", "user": {"user_id": OURA_TERRA_USER}, "seconds": 0}))
    RawEvent.objects.filter(pk=waiting.pk).update(
        state=RawEventState.PARKED, process_error="no_connection_for_terra_user"
    )
    # when
    with django_capture_on_commit_callbacks() as after_commit:
        process(store(sample("auth_success")))
    # then: back to received, and nudged after the commit (with the backfill request)
    waiting.refresh_from_db()
    assert (waiting.state, waiting.process_error) == (RawEventState.RECEIVED, None)
    assert len(after_commit) == 2


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("deauth", ConnectionStatus.DEAUTHORIZED),
        ("access_revoked", ConnectionStatus.REVOKED),
        ("connection_error", ConnectionStatus.DEGRADED),
    ],
)
def test_status_events_move_the_connection(name: str, status: ConnectionStatus) -> None:
    body = sample(name)
    terra_user_id = json.loads(body)["user"]["user_id"]
    TerraConnection.objects.create(user=User.objects.create(id="u1"), terra_user_id=terra_user_id)
    raw_event = process(store(body))
    connection = TerraConnection.objects.get(terra_user_id=terra_user_id)
    assert raw_event.state == RawEventState.PROCESSED
    assert connection.status == status
    assert (connection.disconnected_at is not None) == (status != ConnectionStatus.DEGRADED)


def test_a_status_event_for_an_unknown_connection_is_skipped() -> None:
    raw_event = process(store(sample("deauth")))
    assert (raw_event.state, raw_event.process_error) == (RawEventState.SKIPPED, "skipped:no_connection")


def test_permission_change_sets_the_current_scopes() -> None:
    TerraConnection.objects.create(user=User.objects.create(id=OUR_USER), terra_user_id=OURA_TERRA_USER, scopes="a")
    process(store(sample("permission_change")))
    assert TerraConnection.objects.get().scopes == "daily,heartrate,personal,sleep,spo2"


def test_user_reauth_replaces_the_old_connection_with_the_new_one() -> None:
    old = TerraConnection.objects.create(user=User.objects.create(id=OUR_USER), terra_user_id=OURA_TERRA_USER)
    raw_event = process(store(sample("user_reauth")))
    new = TerraConnection.objects.get(terra_user_id="d2c3b4a5-9687-4a1b-8c2d-3e4f5a6b7c8d")
    old.refresh_from_db()
    assert raw_event.state == RawEventState.PROCESSED
    assert (old.status, old.replaced_by_id) == (ConnectionStatus.REPLACED, new.pk)
    assert (new.status, new.user_id) == (ConnectionStatus.ACTIVE, OUR_USER)


def test_processing_a_processed_event_again_is_a_no_op() -> None:
    raw_event = process(store(sample("auth_success")))
    result = raw_event_process(raw_event_id=raw_event.pk)
    raw_event.refresh_from_db()
    assert result.status == ProcessStatus.NOT_CLAIMED
    assert (raw_event.state, raw_event.attempts) == (RawEventState.PROCESSED, 1)
    assert TerraConnection.objects.count() == 1


def test_a_missing_row_is_not_claimed() -> None:
    assert raw_event_process(raw_event_id=-1).status == ProcessStatus.NOT_CLAIMED


def test_a_transient_failure_schedules_a_retry_and_keeps_the_row_leased() -> None:
    raw_event = store(body_of({"type": "test.always_fail"}))
    result = raw_event_process(raw_event_id=raw_event.pk)
    raw_event.refresh_from_db()
    assert result.status == ProcessStatus.RETRY
    assert result.retry_in is not None
    assert raw_event.state == RawEventState.PROCESSING
    assert raw_event.process_error == "ConnectionError: upstream unavailable (test)"
    # leased past the countdown plus a run, so the drain leaves it to the retry
    assert raw_event.lease_until > timezone.now()


def test_only_the_scheduled_retry_may_claim_a_row_waiting_for_its_retry() -> None:
    raw_event = store(body_of({"type": "test.always_fail"}))
    first = raw_event_process(raw_event_id=raw_event.pk)
    # a stray duplicate message is refused while the countdown runs
    assert raw_event_claim(raw_event_id=raw_event.pk) is None
    # the retry message carries the delivery count it was scheduled from
    assert raw_event_claim(raw_event_id=raw_event.pk, retry_of=first.attempts) == first.attempts + 1


def test_a_transient_failure_is_dead_lettered_after_five_retries(settings) -> None:
    raw_event = store(body_of({"type": "test.always_fail"}))
    results = []
    retry_of = None
    for _ in range(settings.AMY_MAX_RETRIES + 1):
        result = raw_event_process(raw_event_id=raw_event.pk, retry_of=retry_of)
        results.append(result.status)
        retry_of = result.attempts
    raw_event.refresh_from_db()
    assert results == [ProcessStatus.RETRY] * 5 + [ProcessStatus.DEAD]
    assert raw_event.state == RawEventState.DEAD
    assert (raw_event.attempts, raw_event.retries) == (6, 5)
    assert raw_event.process_error == "retries_exhausted: ConnectionError: upstream unavailable (test)"


def test_the_retry_count_lives_on_the_row_so_a_lost_retry_message_does_not_restart_it(settings) -> None:
    # given: a row that failed and was scheduled for retries, whose retry messages were all lost
    raw_event = store(body_of({"type": "test.always_fail"}))
    for _ in range(settings.AMY_MAX_RETRIES):
        assert raw_event_process(raw_event_id=raw_event.pk).status == ProcessStatus.RETRY
        # the lease runs out (no retry message came), and the drain's plain nudge claims it again
        RawEvent.objects.filter(pk=raw_event.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    # when: one more plain delivery fails
    result = raw_event_process(raw_event_id=raw_event.pk)
    # then: the count went on from the row, so the row is dead instead of retried forever
    raw_event.refresh_from_db()
    assert result.status == ProcessStatus.DEAD
    assert (raw_event.state, raw_event.retries) == (RawEventState.DEAD, settings.AMY_MAX_RETRIES)


def test_bad_data_is_dead_lettered_at_once() -> None:
    raw_event = process(store(body_of({"type": "test.bad_data"})))
    assert (raw_event.state, raw_event.attempts) == (RawEventState.DEAD, 1)
    assert raw_event.process_error == "bad_data: impossible payload (test)"


def test_a_row_delivered_more_than_max_deliveries_times_is_dead_lettered(settings) -> None:
    # given: a row whose deliveries all died before finishing (as a worker killed mid-task)
    raw_event = store(body_of({"type": "test.sleep", "seconds": 0}))
    RawEvent.objects.filter(pk=raw_event.pk).update(
        attempts=settings.AMY_MAX_DELIVERIES, state=RawEventState.PROCESSING
    )
    # when
    result = raw_event_process(raw_event_id=raw_event.pk)
    # then
    raw_event.refresh_from_db()
    assert result.status == ProcessStatus.DEAD
    assert (raw_event.state, raw_event.process_error) == (RawEventState.DEAD, "max_deliveries")
    assert raw_event.attempts == settings.AMY_MAX_DELIVERIES + 1


def test_a_dead_row_is_never_processed_again() -> None:
    raw_event = process(store(body_of({"type": "test.bad_data"})))
    assert raw_event_process(raw_event_id=raw_event.pk).status == ProcessStatus.NOT_CLAIMED


def test_a_payload_that_is_not_json_is_bad_data() -> None:
    raw_event = store(body_of({"type": "test.sleep"}))
    RawEvent.objects.filter(pk=raw_event.pk).update(payload="{broken")
    raw_event = process(raw_event)
    assert raw_event.state == RawEventState.DEAD
    assert raw_event.process_error.startswith("bad_data: payload is not JSON")


@pytest.mark.parametrize(("retries", "nominal"), [(0, 30), (1, 60), (2, 120), (3, 240), (4, 480), (5, 600), (9, 600)])
def test_retry_countdowns_double_from_the_base_up_to_the_cap_with_20_percent_jitter(
    settings, retries: int, nominal: float
) -> None:
    settings.AMY_RETRY_BASE_SECONDS = 30
    settings.AMY_RETRY_MAX_SECONDS = 600
    countdowns = [retry_countdown(retries) for _ in range(200)]
    assert all(nominal * 0.8 <= c <= nominal * 1.2 for c in countdowns)
    assert max(countdowns) - min(countdowns) > 0


def test_a_replayed_dead_row_gets_its_retries_afresh(settings) -> None:
    from admin_ops.services import raw_event_replay

    # given: a row dead after its retries
    raw_event = store(body_of({"type": "test.always_fail"}))
    retry_of = None
    for _ in range(settings.AMY_MAX_RETRIES + 1):
        retry_of = raw_event_process(raw_event_id=raw_event.pk, retry_of=retry_of).attempts
    # when: an operator replays it
    raw_event_replay(raw_event_id=raw_event.pk, actor="ops")
    # then: its next failure is retried, not dead at once
    assert raw_event_process(raw_event_id=raw_event.pk).status == ProcessStatus.RETRY
    raw_event.refresh_from_db()
    assert (raw_event.attempts, raw_event.retries) == (1, 1)
