"""Activity deletes (`upload_type` 4) under the ordering rule, as parsed and written for real:
a stale delete never removes a newer copy, an older copy never brings a deleted activity back,
and `/v1/sync` serves a delete as a deleted id."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from ingest.models import Activity, RawEvent
from ingest.normalizers.activity import parse
from ingest.services.typed_rows import EventRows, typed_rows_write, typed_rows_write_many
from tests.ingest.test_sync import settle
from tests.terra import sample

SUMMARY_ID = "21458873012"


@pytest.fixture
def user(db) -> User:
    return User.objects.create(id="u1")


def ledger_row() -> int:
    return RawEvent.objects.create(event_type="activity", dedup_key=f"{RawEvent.objects.count():064d}", payload="{}").pk


def activity_payload(*, delete: bool = False, name: str = "Morning Run") -> dict[str, Any]:
    payload = json.loads(sample("activity"))
    item = payload["data"][0]
    item["metadata"]["name"] = name
    if delete:
        # What Terra sends for a delete: the summary id and the upload type; values may be absent.
        payload["data"] = [{"metadata": {"summary_id": item["metadata"]["summary_id"], "upload_type": 4}}]
    return payload


def deliver(payload: dict[str, Any], *, ordering_ts: int) -> None:
    typed_rows_write(
        parse(copy.deepcopy(payload)),
        user_id="u1",
        provider="GARMIN",
        terra_user_id="t1",
        raw_event_id=ledger_row(),
        ordering_ts=ordering_ts,
    )


def visible() -> list[tuple[str, str | None]]:
    return list(Activity.objects.filter(deleted=False).values_list("summary_id", "name"))


def test_a_stale_delete_does_not_remove_a_newer_copy(user: User) -> None:
    deliver(activity_payload(name="Edited run"), ordering_ts=2000)
    deliver(activity_payload(delete=True), ordering_ts=1000)
    assert visible() == [(SUMMARY_ID, "Edited run")]


def test_an_older_copy_arriving_after_a_delete_does_not_bring_the_activity_back(user: User) -> None:
    deliver(activity_payload(), ordering_ts=1000)
    deliver(activity_payload(delete=True), ordering_ts=3000)
    deliver(activity_payload(name="Late redelivery"), ordering_ts=2000)
    assert visible() == []
    tombstone = Activity.objects.get()
    assert (tombstone.deleted, tombstone.ordering_ts, tombstone.name, tombstone.start_time) == (True, 3000, None, None)


def test_a_delete_that_arrives_before_any_copy_still_wins_over_older_copies(user: User) -> None:
    deliver(activity_payload(delete=True), ordering_ts=3000)
    deliver(activity_payload(), ordering_ts=2000)
    assert visible() == []


def test_a_copy_newer_than_the_delete_brings_the_activity_back(user: User) -> None:
    deliver(activity_payload(), ordering_ts=1000)
    deliver(activity_payload(delete=True), ordering_ts=2000)
    deliver(activity_payload(name="Restored"), ordering_ts=3000)
    assert visible() == [(SUMMARY_ID, "Restored")]


@pytest.mark.parametrize("delete_is_newer", [True, False])
def test_in_one_batch_the_newer_of_a_delete_and_a_copy_wins_whatever_the_arrival_order(
    user: User, delete_is_newer: bool
) -> None:
    shared = {"user_id": "u1", "provider": "GARMIN", "terra_user_id": "t1"}
    delete = EventRows(
        parse(activity_payload(delete=True)),
        **shared,
        raw_event_id=ledger_row(),
        ordering_ts=3000 if delete_is_newer else 1000,
    )
    copy_ = EventRows(parse(activity_payload()), **shared, raw_event_id=ledger_row(), ordering_ts=2000)
    typed_rows_write_many([delete, copy_])
    assert visible() == ([] if delete_is_newer else [(SUMMARY_ID, "Morning Run")])


@pytest.mark.urls("tests.ingest.sync_urls")
@pytest.mark.django_db(transaction=True)
def test_sync_serves_a_delete_as_a_deleted_id_and_a_later_copy_as_a_row() -> None:
    # Transactional: /v1/sync serves only what committed before the oldest running transaction.
    user = User.objects.create(id="u1")
    client = APIClient()
    client.force_authenticate(user=user)
    deliver(activity_payload(), ordering_ts=1000)
    settle()
    first = client.get("/v1/sync", {"tables": "activities"}).json()
    [row] = first["tables"]["activities"]
    assert "deleted" not in row

    deliver(activity_payload(delete=True), ordering_ts=2000)
    settle()
    second = client.get("/v1/sync", {"tables": "activities", "cursor": first["cursor"]}).json()
    assert (second["tables"]["activities"], second["deleted"]["activities"]) == ([], [row["id"]])

    # A fresh client never sees the deleted activity as a row.
    fresh = client.get("/v1/sync", {"tables": "activities"}).json()
    assert (fresh["tables"]["activities"], fresh["deleted"]["activities"]) == ([], [row["id"]])

    deliver(activity_payload(name="Restored"), ordering_ts=3000)
    settle()
    third = client.get("/v1/sync", {"tables": "activities", "cursor": second["cursor"]}).json()
    assert [(r["id"], r["name"]) for r in third["tables"]["activities"]] == [(row["id"], "Restored")]
    assert third["deleted"]["activities"] == []
