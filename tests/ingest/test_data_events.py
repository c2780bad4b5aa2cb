"""Whose rows a data event writes: its connection, a connection made from
user.reference_id, or none yet (parked until one appears); inactive connections write nothing."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from accounts.models import User
from ingest.models import ConnectionStatus, DailySummary, RawEvent, RawEventState, TerraConnection
from ingest.normalizers.base import EventContext, ParsedRows, data_event

pytestmark = pytest.mark.django_db

TERRA_USER = "t-garmin"


def one_day(payload: dict[str, Any]) -> ParsedRows:
    return ParsedRows(rows=[(DailySummary, {"date": date(2026, 11, 23), "steps": payload["steps"]})])


normalize = data_event(one_day)


def context(*, reference_id: str = "", user_id: str | None = None, steps: int = 10) -> EventContext:
    raw_event = RawEvent.objects.create(
        event_type="daily", terra_user_id=TERRA_USER, dedup_key=f"{steps:064d}", payload="{}", provider="GARMIN"
    )
    return EventContext(
        raw_event_id=raw_event.pk,
        event_type="daily",
        terra_user_id=TERRA_USER,
        reference_id=reference_id,
        provider="GARMIN",
        ordering_ts=None,
        request_id="req_test",
        payload={"steps": steps},
        user_id=user_id,
    )


def test_an_event_of_a_connected_terra_user_writes_that_users_rows() -> None:
    TerraConnection.objects.create(user=User.objects.create(id="u1"), terra_user_id=TERRA_USER, provider="GARMIN")
    outcome = normalize(context())
    assert (outcome.state, outcome.user_id, outcome.written.inserted) == (RawEventState.PROCESSED, "u1", 1)
    assert DailySummary.objects.get().user_id == "u1"


def test_an_event_of_an_unknown_terra_user_is_parked() -> None:
    outcome = normalize(context(reference_id="nobody-we-know"))
    assert (outcome.state, outcome.reason) == (RawEventState.PARKED, "no_connection_for_terra_user")
    assert not DailySummary.objects.exists()


def test_an_event_naming_a_known_user_creates_its_connection_and_unparks_the_others() -> None:
    # given: a known user, and an earlier event of the same Terra user parked
    User.objects.create(id="u1")
    earlier = RawEvent.objects.create(
        event_type="sleep", terra_user_id=TERRA_USER, dedup_key="e" * 64, payload="{}", state=RawEventState.PARKED
    )
    # when
    outcome = normalize(context(reference_id="u1"))
    # then
    connection = TerraConnection.objects.get(terra_user_id=TERRA_USER)
    assert (connection.user_id, connection.provider, connection.status) == ("u1", "GARMIN", ConnectionStatus.ACTIVE)
    assert outcome.state == RawEventState.PROCESSED
    earlier.refresh_from_db()
    assert earlier.state == RawEventState.RECEIVED
    assert len(outcome.after_commit) == 1  # the nudge for the unparked event


@pytest.mark.parametrize("status", [ConnectionStatus.DEAUTHORIZED, ConnectionStatus.REVOKED])
def test_an_event_of_an_inactive_connection_is_skipped(status: str) -> None:
    TerraConnection.objects.create(user=User.objects.create(id="u1"), terra_user_id=TERRA_USER, status=status)
    outcome = normalize(context())
    assert (outcome.state, outcome.reason) == (RawEventState.SKIPPED, "skipped:connection_inactive")
    assert not DailySummary.objects.exists()


@pytest.mark.parametrize("status", [ConnectionStatus.DEGRADED, ConnectionStatus.REPLACED])
def test_late_data_of_a_degraded_or_replaced_connection_is_still_the_users(status: str) -> None:
    TerraConnection.objects.create(user=User.objects.create(id="u1"), terra_user_id=TERRA_USER, status=status)
    assert normalize(context()).state == RawEventState.PROCESSED


def test_an_imported_event_belongs_to_the_importing_user_whatever_terra_user_it_names() -> None:
    User.objects.create(id="importer")
    outcome = normalize(context(user_id="importer"))
    assert outcome.user_id == "importer"
    assert DailySummary.objects.get().user_id == "importer"
    assert not TerraConnection.objects.exists()
