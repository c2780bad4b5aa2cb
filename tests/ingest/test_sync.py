"""`GET /v1/sync` (docs/api.md): every change exactly as committed, in pages.

Transactional tests throughout: the endpoint serves only rows stamped below the oldest running
transaction, so rows written inside a test's own (still open) transaction would never be served.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from accounts.models import User
from ingest.models import (
    Activity,
    Biomarker,
    BodyMeasurement,
    DailySummary,
    LabUpload,
    MenstruationDay,
    NutritionDaily,
    RawEvent,
    SleepSession,
    SyncDeletion,
    TerraConnection,
)
from ingest.normalizers.base import ParsedRows
from ingest.services.typed_rows import typed_rows_write
from ingest.sync import MAX_LIMIT, SYNC_TABLES, decode_cursor, encode_cursor, read_sync_page

pytestmark = [pytest.mark.urls("tests.ingest.sync_urls"), pytest.mark.django_db(transaction=True)]

DAY = date(2026, 11, 23)
AT = datetime(2026, 11, 23, 6, 12, 45, tzinfo=UTC)

Mirror = dict[tuple[str, int], dict[str, Any]]


# Helpers ------------------------------------------------------------------------------------------


def client_for(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


def sync(client: APIClient, cursor: str | None = None, **params: Any) -> dict[str, Any]:
    if cursor is not None:
        params["cursor"] = cursor
    response = client.get("/v1/sync", params)
    assert response.status_code == 200, response.content
    return response.json()


def apply(mirror: Mirror, page: dict[str, Any]) -> None:
    """What the CLI does with a page: deletions first, then the rows."""
    for table, ids in page["deleted"].items():
        for row_id in ids:
            mirror.pop((table, row_id), None)
    for table, rows in page["tables"].items():
        for row in rows:
            mirror[(table, row["id"])] = row


def page_size(page: dict[str, Any]) -> int:
    return sum(map(len, page["tables"].values())) + sum(map(len, page["deleted"].values()))


def sync_until_done(
    client: APIClient, mirror: Mirror, cursor: str | None = None, limit: int | None = None, **params: Any
) -> tuple[str, list[dict[str, Any]]]:
    pages = []
    while True:
        page = sync(client, cursor, **({"limit": limit} if limit else {}), **params)
        pages.append(page)
        if limit:
            assert page_size(page) <= limit
        apply(mirror, page)
        cursor = page["cursor"]
        if not page["has_more"]:
            return cursor, pages
        assert len(pages) < 10_000


def served(pages: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(table, row["id"]) for page in pages for table, rows in page["tables"].items() for row in rows]


def as_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


def server_rows(user_id: str) -> Mirror:
    """The user's rows as the server holds them, read independently of ingest/sync.py."""
    rows: Mirror = {}
    for table, model in SYNC_TABLES.items():
        for values in model._default_manager.filter(user_id=user_id).values():
            values.pop("sync_stamp")
            if values.pop("deleted", False):  # an activity's delete, kept as a tombstone
                continue
            rows[(table, values["id"])] = {key: as_json(value) for key, value in values.items()}
    return rows


def settle(timeout: float = 30.0) -> None:
    """Wait until every transaction that had started by now has ended.

    The tests' own writes are committed already; other sessions on the same PostgreSQL cluster
    (another test run, say) may still hold `xmin` back for a moment, and the endpoint rightly
    waits for them.
    """
    with connection.cursor() as db:
        db.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        (target,) = db.fetchone()
        deadline = time.monotonic() + timeout
        while True:
            db.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            if db.fetchone()[0] >= target:
                return
            assert time.monotonic() < deadline, f"a transaction on this cluster stayed open for {timeout} s"
            time.sleep(0.01)


def raw_connection() -> psycopg.Connection:
    """A second session on the test database, outside Django (autocommit off: each is a transaction)."""
    settings = connection.settings_dict
    return psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"] or "postgres",
        password=settings["PASSWORD"] or None,
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
    )


def insert_daily(db: psycopg.Connection, user_id: str, day: date, steps: int) -> int:
    return db.execute(
        "INSERT INTO daily_summary (user_id, provider, terra_user_id, date, steps) "
        "VALUES (%s, 'GARMIN', 't1', %s, %s) RETURNING id",
        [user_id, day, steps],
    ).fetchone()[0]


def stamp_of(model: type, pk: int) -> int:
    return model._default_manager.values_list("sync_stamp", flat=True).get(pk=pk)


@pytest.fixture
def user() -> User:
    return User.objects.create(id="user_a")


@pytest.fixture
def client(user: User) -> APIClient:
    return client_for(user)


@pytest.fixture
def other_sessions() -> Iterator[list[psycopg.Connection]]:
    sessions: list[psycopg.Connection] = []
    yield sessions
    for session in sessions:
        session.close()


def make_every_kind_of_row(user_id: str, n: int = 1) -> None:
    """n rows in each synced table (biomarkers: n per upload) for `user_id`."""
    shared = {"user_id": user_id, "provider": "GARMIN", "terra_user_id": f"t-{user_id}"}
    for i in range(n):
        day = DAY - timedelta(days=i)
        DailySummary.objects.create(**shared, date=day, steps=1000 + i, distance_meters=1.5 * i, start_time=AT)
        SleepSession.objects.create(**shared, summary_id=f"sleep-{i}", is_nap=False, asleep_seconds=3600.0)
        Activity.objects.create(**shared, summary_id=f"act-{i}", name="Run", activity_type=8)
        BodyMeasurement.objects.create(
            **shared, measured_at=AT - timedelta(days=i), metric="weight_kg", value=70.5, unit="kg"
        )
        NutritionDaily.objects.create(**shared, date=day, calories=2100.0)
        MenstruationDay.objects.create(**shared, date=day, phase=0, period_start_date=day)
        upload = LabUpload.objects.create(user_id=user_id, filename=f"lab-{i}.pdf", size_bytes=10)
        Biomarker.objects.create(**shared, lab_upload=upload, code="hemoglobin", value=14.2, collected_at=AT)
        TerraConnection.objects.create(user_id=user_id, terra_user_id=f"t-{user_id}-{i}", provider="GARMIN")


# The contract -------------------------------------------------------------------------------------


def test_an_empty_account_syncs_to_nothing(client: APIClient) -> None:
    page = sync(client)
    assert page["tables"] == {name: [] for name in SYNC_TABLES}
    assert page["deleted"] == {name: [] for name in SYNC_TABLES}
    assert page["has_more"] is False
    # Nothing yet: every table stays at its beginning, and the same cursor again gives nothing.
    assert sync(client, page["cursor"])["tables"] == {name: [] for name in SYNC_TABLES}


def test_rows_carry_every_column_as_json_types_without_the_stamp(user: User, client: APIClient) -> None:
    row = DailySummary.objects.create(
        user=user,
        provider="GARMIN",
        terra_user_id="t1",
        date=DAY,
        steps=11894,
        distance_meters=8123.5,
        start_time=AT,
        end_time=(AT + timedelta(hours=1, microseconds=120)).astimezone(timezone(timedelta(hours=-5))),
        avg_hr_bpm=float("nan"),
    )
    settle()
    (sent,) = sync(client, tables="daily_summary")["tables"]["daily_summary"]
    columns = {f.column for f in DailySummary._meta.concrete_fields} - {"sync_stamp"}
    assert set(sent) == columns
    assert sent["id"] == row.id
    assert sent["user_id"] == "user_a"
    assert sent["date"] == "2026-11-23"
    assert sent["start_time"] == "2026-11-23T06:12:45Z"
    assert sent["steps"] == 11894
    assert sent["distance_meters"] == 8123.5
    assert sent["end_time"] == "2026-11-23T07:12:45.000120Z"
    assert sent["avg_hr_bpm"] is None  # NaN has no JSON form
    assert sent["min_hr_bpm"] is None
    assert datetime.fromisoformat(sent["updated_at"]).tzinfo is not None
    assert sent == server_rows("user_a")[("daily_summary", row.id)] | {"avg_hr_bpm": None}


def test_paging_with_a_small_limit_delivers_every_row_exactly_once(user: User, client: APIClient) -> None:
    make_every_kind_of_row(user.id, n=4)
    settle()
    mirror: Mirror = {}
    _, pages = sync_until_done(client, mirror, limit=7)
    every = served(pages)
    assert len(every) == len(set(every)) == 4 * len(SYNC_TABLES)
    assert len(pages) == 6  # 36 rows by 7, the last page short
    assert [page["has_more"] for page in pages] == [True] * 5 + [False]
    assert mirror == server_rows(user.id)


def test_a_page_of_exactly_limit_items_says_has_more_only_when_there_is_more(user: User, client: APIClient) -> None:
    make_every_kind_of_row(user.id, n=1)
    settle()
    first = sync(client, limit=len(SYNC_TABLES))
    assert page_size(first) == len(SYNC_TABLES)
    assert first["has_more"] is False


def test_the_returned_cursor_after_has_more_false_gives_nothing_new(user: User, client: APIClient) -> None:
    make_every_kind_of_row(user.id, n=2)
    settle()
    cursor, _ = sync_until_done(client, {})
    again = sync(client, cursor)
    assert page_size(again) == 0
    assert again["has_more"] is False


def test_an_update_resends_the_row_with_its_new_values(user: User, client: APIClient) -> None:
    make_every_kind_of_row(user.id, n=2)
    settle()
    mirror: Mirror = {}
    cursor, _ = sync_until_done(client, mirror)
    row = DailySummary.objects.filter(user=user).order_by("id").first()
    DailySummary.objects.filter(pk=row.pk).update(steps=99)
    LabUpload.objects.filter(user=user).update(status="parsed")
    settle()
    cursor, pages = sync_until_done(client, mirror, cursor)
    assert sorted(served(pages)) == sorted(
        [("daily_summary", row.pk)] + [("lab_uploads", pk) for pk in LabUpload.objects.values_list("pk", flat=True)]
    )
    assert mirror[("daily_summary", row.pk)]["steps"] == 99
    assert mirror == server_rows(user.id)


def test_an_update_that_changes_nothing_is_not_resent(user: User, client: APIClient) -> None:
    make_every_kind_of_row(user.id, n=1)
    settle()
    cursor, _ = sync_until_done(client, {})
    connection_row = TerraConnection.objects.get(user=user)
    before = stamp_of(TerraConnection, connection_row.pk)
    connection_row.save()  # the ORM rewrites every column with the same values
    TerraConnection.objects.filter(pk=connection_row.pk).update(sync_stamp=1)  # not ours to set
    assert stamp_of(TerraConnection, connection_row.pk) == before
    settle()
    assert page_size(sync(client, cursor)) == 0


def test_the_typed_row_writer_stamps_its_upserts_and_its_skipped_no_ops_send_nothing(
    user: User, client: APIClient
) -> None:
    events = [RawEvent.objects.create(event_type="daily", dedup_key=f"{n:064d}", payload="{}").pk for n in (1, 2)]

    def write(steps: int, raw_event_id: int) -> None:
        with transaction.atomic():
            typed_rows_write(
                ParsedRows(rows=[(DailySummary, {"date": DAY, "steps": steps})], deletions=[]),
                user_id=user.id,
                provider="GARMIN",
                terra_user_id="t1",
                raw_event_id=raw_event_id,
                ordering_ts=1000,
            )

    write(100, events[0])
    settle()
    mirror: Mirror = {}
    cursor, pages = sync_until_done(client, mirror)
    assert [row["steps"] for row in pages[0]["tables"]["daily_summary"]] == [100]
    write(100, events[0])  # the same event again: the writer skips the update
    settle()
    assert page_size(sync(client, cursor)) == 0
    write(250, events[1])  # a newer copy: an update through ON CONFLICT DO UPDATE
    settle()
    cursor, pages = sync_until_done(client, mirror, cursor)
    assert [row["steps"] for row in pages[0]["tables"]["daily_summary"]] == [250]
    assert mirror == server_rows(user.id)


def test_a_delete_shows_in_deleted_including_cascades(user: User, client: APIClient) -> None:
    make_every_kind_of_row(user.id, n=2)
    settle()
    mirror: Mirror = {}
    cursor, _ = sync_until_done(client, mirror)
    activity = Activity.objects.filter(user=user).order_by("id").first()
    upload = LabUpload.objects.filter(user=user).order_by("id").first()
    activity_id, upload_id = activity.pk, upload.pk
    biomarker_ids = list(upload.biomarkers.values_list("pk", flat=True))
    activity.delete()
    upload.delete()  # its biomarkers go with it
    settle()
    cursor, pages = sync_until_done(client, mirror, cursor)
    (page,) = pages
    assert page["deleted"]["activities"] == [activity_id]
    assert page["deleted"]["lab_uploads"] == [upload_id]
    assert page["deleted"]["biomarkers"] == biomarker_ids
    assert served(pages) == []
    assert mirror == server_rows(user.id)
    # A row deleted before the client ever saw it: a fresh client gets the id and ignores it.
    fresh: Mirror = {}
    sync_until_done(client_for(user), fresh)
    assert fresh == server_rows(user.id)


def test_deleted_ids_count_toward_the_limit(user: User, client: APIClient) -> None:
    rows = [
        DailySummary.objects.create(user=user, provider="GARMIN", terra_user_id="t1", date=DAY - timedelta(days=i))
        for i in range(3)
    ]
    settle()
    cursor, _ = sync_until_done(client, {})
    DailySummary.objects.filter(user=user).delete()
    settle()
    first = sync(client, cursor, limit=2)
    assert (first["deleted"]["daily_summary"], first["has_more"]) == ([rows[0].pk, rows[1].pk], True)
    second = sync(client, first["cursor"], limit=2)
    assert (second["deleted"]["daily_summary"], second["has_more"]) == ([rows[2].pk], False)


def test_one_user_never_sees_another_users_rows_or_deletions(user: User, client: APIClient) -> None:
    other = User.objects.create(id="user_b")
    make_every_kind_of_row(user.id, n=1)
    make_every_kind_of_row(other.id, n=2)
    settle()
    mine: Mirror = {}
    cursor, _ = sync_until_done(client, mine)
    assert mine == server_rows(user.id)
    assert {row["user_id"] for row in mine.values()} == {"user_a"}
    Activity.objects.filter(user=other).delete()
    TerraConnection.objects.filter(user=other).delete()
    DailySummary.objects.filter(user=other).update(steps=5)
    settle()
    page = sync(client, cursor)
    assert page_size(page) == 0
    theirs: Mirror = {}
    sync_until_done(client_for(other), theirs)
    assert theirs == server_rows(other.id)
    assert {row["user_id"] for row in theirs.values()} == {"user_b"}


def test_a_row_moved_to_another_user_is_deleted_from_the_first_and_sent_to_the_second(
    user: User, client: APIClient
) -> None:
    other = User.objects.create(id="user_b")
    moved = TerraConnection.objects.create(user=user, terra_user_id="t-moving", provider="OURA")
    settle()
    cursor, _ = sync_until_done(client, {})
    TerraConnection.objects.filter(pk=moved.pk).update(user=other)
    settle()
    page = sync(client, cursor)
    assert page["deleted"]["terra_connections"] == [moved.pk]
    assert served([page]) == []
    theirs = sync(client_for(other))
    assert served([theirs]) == [("terra_connections", moved.pk)]
    assert theirs["deleted"]["terra_connections"] == []


def test_a_table_new_to_the_cursor_starts_from_its_beginning(user: User, client: APIClient) -> None:
    make_every_kind_of_row(user.id, n=2)
    settle()
    mirror: Mirror = {}
    cursor, pages = sync_until_done(client, mirror, tables="daily_summary")
    assert {table for table, _ in served(pages)} == {"daily_summary"}
    assert set(pages[0]["tables"]) == {"daily_summary"}
    cursor, pages = sync_until_done(client, mirror, cursor, tables="daily_summary, activities,")
    assert {table for table, _ in served(pages)} == {"activities"}
    # Tables left out keep their place in the cursor.
    cursor, pages = sync_until_done(client, mirror, cursor, tables="activities")
    assert served(pages) == []
    cursor, _ = sync_until_done(client, mirror, cursor)
    assert mirror == server_rows(user.id)
    assert set(decode_cursor(cursor).rows) == set(SYNC_TABLES)


def cursor_of(body: Any) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": str(MAX_LIMIT + 1)}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"tables": "athletes"}, "tables"),
        ({"tables": "daily_summary,nope"}, "tables"),
        ({"tables": "biomarkers_wide"}, "tables"),
        ({"cursor": "not a cursor!"}, "cursor"),
        ({"cursor": "abc"}, "cursor"),
        ({"cursor": cursor_of(b"not json")}, "cursor"),
        ({"cursor": cursor_of([1, 2])}, "cursor"),
        ({"cursor": cursor_of({"v": 2, "t": {}, "d": {}})}, "cursor"),
        ({"cursor": cursor_of({"v": True, "t": {}, "d": {}})}, "cursor"),
        ({"cursor": cursor_of({"v": 1, "t": {"athletes": [1, 1]}})}, "cursor"),
        ({"cursor": cursor_of({"v": 1, "t": {"activities": [1, -1]}})}, "cursor"),
        ({"cursor": cursor_of({"v": 1, "t": {"activities": [1, "2"]}})}, "cursor"),
        ({"cursor": cursor_of({"v": 1, "t": {"activities": [1]}})}, "cursor"),
        ({"cursor": cursor_of({"v": 1, "d": {"activities": [1.0, 2]}})}, "cursor"),
        ({"cursor": cursor_of({"v": 1, "x": 1})}, "cursor"),
        # A position no transaction has reached yet: a cursor from another database.
        ({"cursor": cursor_of({"v": 1, "t": {"activities": [2**62, 1]}})}, "cursor"),
        ({"cursor": "A" * 5000}, "cursor"),
    ],
)
def test_bad_parameters_answer_invalid_field_naming_it(client: APIClient, params: dict[str, str], field: str) -> None:
    response = client.get("/v1/sync", params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"code", "message", "request_id", "docs_url", "details"}
    assert error["code"] == "invalid_field"
    assert error["details"] == {"field": field}
    assert error["docs_url"].endswith("#invalid_field")


def test_empty_parameters_mean_the_defaults(client: APIClient) -> None:
    page = sync(client, "", limit="", tables="")
    assert set(page["tables"]) == set(SYNC_TABLES)


def test_a_cursor_round_trips(client: APIClient) -> None:
    page = sync(client)
    cursor = decode_cursor(page["cursor"])
    assert encode_cursor(cursor) == page["cursor"]
    assert "=" not in page["cursor"]


def test_a_page_is_read_in_one_repeatable_read_snapshot(user: User, monkeypatch: pytest.MonkeyPatch) -> None:
    import ingest.sync

    seen = []
    real = ingest.sync._page_keys

    def spy(*args: Any) -> Any:
        with connection.cursor() as db:
            db.execute("SHOW transaction_isolation")
            seen.append(db.fetchone()[0])
            db.execute("SHOW transaction_read_only")
            seen.append(db.fetchone()[0])
        return real(*args)

    monkeypatch.setattr(ingest.sync, "_page_keys", spy)
    read_sync_page(user_id=user.id, cursor=decode_cursor(None), tables=list(SYNC_TABLES), limit=10)
    assert seen == ["repeatable read", "on"]


# The property the design exists for --------------------------------------------------------------


def test_a_row_whose_transaction_commits_late_is_not_skipped(
    user: User, client: APIClient, other_sessions: list[psycopg.Connection]
) -> None:
    early = DailySummary.objects.create(user=user, provider="GARMIN", terra_user_id="t1", date=DAY, steps=1)
    settle()
    # A transaction that starts (and takes its id) first, but commits last.
    slow = raw_connection()
    other_sessions.append(slow)
    late_id = insert_daily(slow, user.id, DAY + timedelta(days=1), 2)
    (late_stamp,) = slow.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
    # Meanwhile another one starts later and commits at once: its updated_at is the newest.
    later = DailySummary.objects.create(user=user, provider="GARMIN", terra_user_id="t1", date=DAY + timedelta(days=2))
    early_stamp, later_stamp = stamp_of(DailySummary, early.pk), stamp_of(DailySummary, later.pk)
    assert early_stamp < late_stamp < later_stamp

    mirror: Mirror = {}
    cursor, pages = sync_until_done(client, mirror)
    # Only what is safe: the committed row stamped after the open transaction waits for it.
    assert served(pages) == [("daily_summary", early.pk)]
    assert all(stamp < late_stamp for stamp, _ in decode_cursor(cursor).rows.values())

    slow.commit()
    settle()
    cursor, pages = sync_until_done(client, mirror, cursor)
    assert served(pages) == [("daily_summary", late_id), ("daily_summary", later.pk)]
    assert mirror == server_rows(user.id)


def test_an_update_and_a_delete_that_commit_late_are_not_skipped(
    user: User, client: APIClient, other_sessions: list[psycopg.Connection]
) -> None:
    kept = DailySummary.objects.create(user=user, provider="GARMIN", terra_user_id="t1", date=DAY, steps=1)
    gone = Activity.objects.create(user=user, provider="GARMIN", terra_user_id="t1", summary_id="a1")
    settle()
    mirror: Mirror = {}
    cursor, _ = sync_until_done(client, mirror)
    slow = raw_connection()
    other_sessions.append(slow)
    slow.execute("UPDATE daily_summary SET steps = 2 WHERE id = %s", [kept.pk])
    slow.execute("DELETE FROM activities WHERE id = %s", [gone.pk])
    DailySummary.objects.create(user=user, provider="GARMIN", terra_user_id="t1", date=DAY + timedelta(days=1))
    cursor, pages = sync_until_done(client, mirror, cursor)
    assert page_size(pages[0]) == 0
    slow.commit()
    settle()
    cursor, pages = sync_until_done(client, mirror, cursor)
    assert mirror == server_rows(user.id)
    assert mirror[("daily_summary", kept.pk)]["steps"] == 2
    assert ("activities", gone.pk) not in mirror


_TABLES_UNDER_TEST = ("daily_summary", "activities", "terra_connections")


class Writers:
    """Sessions writing one user's rows, and what each one's open transaction has touched, so that
    no session ever waits for another's row lock (the test drives them all from one thread)."""

    def __init__(self, sessions: list[psycopg.Connection], user_id: str, rng: random.Random) -> None:
        self.sessions = sessions
        self.user_id = user_id
        self.rng = rng
        self.committed: set[tuple[str, int]] = set()  # rows every session can see
        self.locked: dict[tuple[str, int], int] = {}  # rows an open transaction has written
        self.inserted: list[set[tuple[str, int]]] = [set() for _ in sessions]
        self.deleted: list[set[tuple[str, int]]] = [set() for _ in sessions]

    def writable(self, index: int) -> list[tuple[str, int]]:
        return [
            key
            for key in sorted(self.committed | self.inserted[index])
            if self.locked.get(key, index) == index and key not in self.deleted[index]
        ]

    def insert(self, index: int, serial: int) -> None:
        db, table = self.sessions[index], self.rng.choice(_TABLES_UNDER_TEST)
        if table == "daily_summary":
            new_id = insert_daily(db, self.user_id, DAY + timedelta(days=serial), self.rng.randrange(5))
        elif table == "activities":
            new_id = db.execute(
                "INSERT INTO activities (user_id, provider, terra_user_id, summary_id, steps) "
                "VALUES (%s, 'GARMIN', 't1', %s, %s) RETURNING id",
                [self.user_id, f"s{serial}", self.rng.randrange(5)],
            ).fetchone()[0]
        else:
            new_id = db.execute(
                "INSERT INTO terra_connections (user_id, terra_user_id, provider, status) "
                "VALUES (%s, %s, 'OURA', 'active') RETURNING id",
                [self.user_id, f"t-{serial}"],
            ).fetchone()[0]
        self.inserted[index].add((table, new_id))
        self.locked[(table, new_id)] = index

    def change(self, index: int, delete: bool) -> None:
        writable = self.writable(index)
        if not writable:
            return
        db = self.sessions[index]
        table, row_id = self.rng.choice(writable)
        if delete:
            db.execute(f"DELETE FROM {table} WHERE id = %s", [row_id])
            self.deleted[index].add((table, row_id))
        elif table == "terra_connections":
            status = self.rng.choice(["active", "degraded", "revoked"])  # sometimes unchanged
            db.execute("UPDATE terra_connections SET status = %s WHERE id = %s", [status, row_id])
        else:
            db.execute(f"UPDATE {table} SET steps = %s WHERE id = %s", [self.rng.randrange(5), row_id])
        self.locked[(table, row_id)] = index

    def end(self, index: int, commit: bool) -> None:
        if commit:
            self.sessions[index].commit()
            self.committed.update(self.inserted[index])
            self.committed.difference_update(self.deleted[index])
        else:
            self.sessions[index].rollback()
        for key in [key for key, owner in self.locked.items() if owner == index]:
            del self.locked[key]
        self.inserted[index].clear()
        self.deleted[index].clear()


def test_random_interleavings_of_concurrent_writers_leave_the_mirror_equal_to_the_server(
    other_sessions: list[psycopg.Connection],
) -> None:
    """Three sessions insert, update, delete, commit and roll back in random order while a client
    syncs in random page sizes; once everything has ended, syncing until `has_more` is false makes
    the client's mirror equal to the server's rows, whatever the interleaving."""
    rng = random.Random(20261125)
    sessions = [raw_connection() for _ in range(3)]
    other_sessions.extend(sessions)
    serial = 0
    for trial in range(100):
        user = User.objects.create(id=f"prop-{trial}")
        client = client_for(user)
        writers = Writers(sessions, user.id, rng)
        mirror: Mirror = {}
        cursor: str | None = None
        for _ in range(rng.randint(20, 70)):
            index = rng.randrange(len(sessions))
            op = rng.choices(["insert", "update", "delete", "commit", "rollback", "sync"], [4, 4, 2, 3, 1, 3])[0]
            if op == "insert":
                serial += 1
                writers.insert(index, serial)
            elif op in ("update", "delete"):
                writers.change(index, delete=op == "delete")
            elif op in ("commit", "rollback"):
                writers.end(index, commit=op == "commit")
            else:
                limit = rng.randint(1, 6)
                page = sync(client, cursor, limit=limit)
                assert page_size(page) <= limit
                apply(mirror, page)
                cursor = page["cursor"]

        for index in range(len(sessions)):
            writers.end(index, commit=rng.random() < 0.8)
        settle()
        sync_until_done(client, mirror, cursor, limit=rng.randint(1, 50))
        assert mirror == server_rows(user.id), f"trial {trial}"
        assert {key for key in mirror if key[0] in _TABLES_UNDER_TEST} == writers.committed

    assert SyncDeletion.objects.exists()
