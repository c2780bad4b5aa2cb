"""`GET /v1/sync`: the incremental mirror the CLI keeps in its local SQLite.

Why the cursor is a transaction id, not a time (also in docs/api.md):

- Every insert and real update of a synced row stamps `sync_stamp` with the writing transaction's
  id, and every delete leaves a tombstone in `sync_deletions` stamped the same way (triggers,
  migration 0006). Transaction ids are handed out in increasing order, but transactions commit in
  any order, so a stamp says nothing about when its row became visible.
- What is known: every transaction with an id below the snapshot's `xmin` (the oldest transaction
  still running) has finished, and any transaction that commits later has an id of at least `xmin`
  (it is running now, or has not started and will get a larger id). So the set of row versions and
  tombstones stamped below `xmin` is final: nothing can appear below it any more.
- We therefore serve only stamps below `xmin`, in `(stamp, id)` order, after the client's position,
  and the cursor is the last `(stamp, id)` served: it never passes `xmin`, so a late commit is
  picked up by the next call, and an update (a new, larger stamp) re-sends its row.
- `xmin` and the rows must come from one snapshot: the page is read in one REPEATABLE READ, READ
  ONLY transaction whose first statement reads `xmin`, so the rows below it are exactly those that
  snapshot sees. (Inside a caller's transaction, e.g. a test's, the caller's isolation applies;
  under READ COMMITTED a later statement may see a newer version of a row, or miss one deleted
  meanwhile, which is harmless: the new version and the tombstone are stamped at or above the
  first `xmin` and come on a later call.)
- A transaction that stays open holds `xmin` back for every user (it is cluster-wide): newer
  commits wait until it ends. Statement and idle-in-transaction timeouts bound that. `has_more`
  is false once nothing below `xmin` is left, even if newer commits are waiting behind it.

The page: `limit` counts every item served — a row, or a deleted id — across all requested tables.
Items are merged over all tables in `(stamp, deletions first, table, id)` order, so one
transaction's changes arrive together and a delete is never served after a later re-insert. A
client applies `deleted` before `tables`. Each table has two positions in the cursor, one for its
rows and one for its tombstones; a table the cursor does not know starts from its beginning, for
rows and deletions alike (a client that never had the table gets ids it can ignore).

Activities are also deleted by Terra (`upload_type` 4): such a delete stays as a row flagged
`deleted` (it must keep its ordering position), stamped like any update, and is served in
`deleted` at that stamp. A newer copy of the activity later re-sends it in `tables`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any, cast

from django.db import connection, models, transaction

from amy import pagination
from amy.errors import invalid_field
from ingest.models import TYPED_MODELS, Athlete, LabUpload, TerraConnection

# The synced tables, in the order that breaks ties within one transaction: the typed tables but
# athletes (no sync stamp: the CLI keeps no profile), then the uploads and the connections.
SYNC_TABLES: dict[str, type[models.Model]] = {
    **{model._meta.db_table: model for model in TYPED_MODELS if model is not Athlete},
    "lab_uploads": LabUpload,
    "terra_connections": TerraConnection,
}
_TABLE_INDEX = {name: index for index, name in enumerate(SYNC_TABLES)}

DEFAULT_LIMIT = 1000
MAX_LIMIT = 5000
CURSOR_VERSION = 1
_MAX_BIGINT = 2**63 - 1

TOMBSTONE_FIELD = "deleted"
Position = tuple[int, int]  # the last (sync_stamp, id) served
BEGINNING: Position = (0, 0)


# Parameters ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    rows: dict[str, Position] = field(default_factory=dict)
    deletions: dict[str, Position] = field(default_factory=dict)


def encode_cursor(cursor: Cursor) -> str:
    body = {
        "v": CURSOR_VERSION,
        "t": {name: list(position) for name, position in cursor.rows.items()},
        "d": {name: list(position) for name, position in cursor.deletions.items()},
    }
    return pagination.encode_cursor(body)


def _positions(value: Any) -> dict[str, Position]:
    if not isinstance(value, dict):
        raise ValueError
    positions = {}
    for name, position in value.items():
        if name not in SYNC_TABLES or not isinstance(position, list) or len(position) != 2:
            raise ValueError
        if not all(type(part) is int and 0 <= part <= _MAX_BIGINT for part in position):
            raise ValueError
        positions[name] = (position[0], position[1])
    return positions


def decode_cursor(raw: str | None) -> Cursor:
    """The client's cursor; none (or empty) = from the beginning. 400 `invalid_field` `cursor`."""
    if not raw:
        return Cursor()
    body = pagination.decode_cursor(raw)
    try:
        if set(body) - {"v", "t", "d"} or type(body.get("v")) is not int or body["v"] != CURSOR_VERSION:
            raise ValueError
        return Cursor(rows=_positions(body.get("t", {})), deletions=_positions(body.get("d", {})))
    except ValueError:
        raise pagination.malformed_cursor() from None


def parse_limit(raw: str | None) -> int:
    return pagination.parse_limit(raw, default=DEFAULT_LIMIT, maximum=MAX_LIMIT)


def parse_tables(raw: str | None) -> list[str]:
    """Comma-separated table names (blanks ignored); none = all. Returned in SYNC_TABLES order."""
    names = {name.strip() for name in (raw or "").split(",")} - {""}
    if not names:
        return list(SYNC_TABLES)
    unknown = sorted(names - set(SYNC_TABLES))
    if unknown:
        raise invalid_field("tables", f"Unknown table(s): {', '.join(unknown)}. Known: {', '.join(SYNC_TABLES)}.")
    return [name for name in SYNC_TABLES if name in names]


# The selection ------------------------------------------------------------------------------------


@dataclass
class SyncPage:
    tables: dict[str, list[dict[str, Any]]]
    deleted: dict[str, list[int]]
    cursor: Cursor
    has_more: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "tables": self.tables,
            "deleted": self.deleted,
            "cursor": encode_cursor(self.cursor),
            "has_more": self.has_more,
        }


def _json_expression(f: models.Field) -> str:
    """The column as the JSON value it is sent as, rendered by PostgreSQL (cheaper than Python)."""
    column = str(f.column)
    if isinstance(f, models.DateTimeField):  # ISO 8601 in UTC: 2026-11-24T06:12:45Z, .ffffff when set
        utc = f"({column} AT TIME ZONE 'UTC')"
        return (
            f"to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') "
            f"|| CASE WHEN date_trunc('second', {column}) = {column} THEN '' ELSE to_char({utc}, '.US') END || 'Z'"
        )
    if isinstance(f, models.DateField):
        return f"to_char({column}, 'YYYY-MM-DD')"
    if isinstance(f, models.FloatField):  # JSON has no NaN or Infinity
        return f"NULLIF(NULLIF(NULLIF({column}, 'NaN'), 'Infinity'), '-Infinity')"
    return column


@cache
def _select_list(model: type[models.Model]) -> tuple[tuple[str, ...], str]:
    """Every column of the table but `sync_stamp` (the cursor carries positions; stamps are ours)."""
    fields = [f for f in model._meta.concrete_fields if f.column != "sync_stamp"]
    return tuple(str(f.column) for f in fields), ", ".join(_json_expression(f) for f in fields)


def _has_tombstones(model: type[models.Model]) -> bool:
    """A table whose deletes are rows flagged `deleted` (activities: deletes obey the ordering
    rule, see ingest/normalizers/activity.py): such a row is served as a deleted id."""
    return any(f.name == TOMBSTONE_FIELD for f in model._meta.concrete_fields)


def _without_tombstone_flag(row: dict[str, Any]) -> dict[str, Any]:
    return {column: value for column, value in row.items() if column != TOMBSTONE_FIELD}


_ROWS_BRANCH = """(
    SELECT 1 AS kind, {index} AS tbl, sync_stamp, id, NULL::bigint AS row_id FROM {table}
    WHERE user_id = %s AND sync_stamp < %s AND (sync_stamp, id) > (%s, %s)
    ORDER BY sync_stamp, id LIMIT %s
)"""
_DELETIONS_BRANCH = """(
    SELECT 0 AS kind, {index} AS tbl, sync_stamp, id, row_id FROM sync_deletions
    WHERE user_id = %s AND table_name = %s AND sync_stamp < %s AND (sync_stamp, id) > (%s, %s)
    ORDER BY sync_stamp, id LIMIT %s
)"""


def _page_keys(
    user_id: str, cursor: Cursor, tables: list[str], limit: int, xmin: int
) -> list[tuple[int, int, int, int, int | None]]:
    """The next `limit + 1` items over all streams, as (kind, table index, stamp, id, row_id).

    Each stream is a range scan of its (user_id, [table_name,] sync_stamp, id) index capped at
    `limit + 1`; the merge sorts at most 2 x tables x (limit + 1) keys, not the user's whole data.
    """
    branches: list[str] = []
    params: list[Any] = []
    for name in tables:
        index = _TABLE_INDEX[name]
        stamp, row_id = cursor.rows.get(name, BEGINNING)
        branches.append(_ROWS_BRANCH.format(index=index, table=name))
        params += [user_id, xmin, stamp, row_id, limit + 1]
        stamp, deletion_id = cursor.deletions.get(name, BEGINNING)
        branches.append(_DELETIONS_BRANCH.format(index=index))
        params += [user_id, name, xmin, stamp, deletion_id, limit + 1]
    sql = (
        "SELECT kind, tbl, sync_stamp, id, row_id FROM (\n"
        + "\nUNION ALL\n".join(branches)
        + "\n) AS items ORDER BY sync_stamp, kind, tbl, id LIMIT %s"
    )
    params.append(limit + 1)
    with connection.cursor() as db:
        db.execute(sql, params)
        return db.fetchall()


def _fetch_rows(name: str, user_id: str, ids: list[int]) -> list[dict[str, Any]]:
    columns, select_list = _select_list(SYNC_TABLES[name])
    sql = f"SELECT {select_list} FROM {name} WHERE user_id = %s AND id = ANY(%s) ORDER BY sync_stamp, id"
    with connection.cursor() as db:
        db.execute(sql, [user_id, ids])
        return [dict(zip(columns, row, strict=True)) for row in db]


def _read_page(user_id: str, cursor: Cursor, tables: list[str], limit: int) -> SyncPage:
    with connection.cursor() as db:
        db.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        (xmin,) = db.fetchone()
    # Every position we hand out is below the xmin of its time, and xmin only grows: a cursor
    # beyond it comes from another database (or from before a restore) and would skip rows.
    for stamp, _ in [*cursor.rows.values(), *cursor.deletions.values()]:
        if stamp >= xmin:
            raise pagination.malformed_cursor("The cursor is not from this server; sync again without one.")

    keys = _page_keys(user_id, cursor, tables, limit, xmin)
    has_more = len(keys) > limit
    keys = keys[:limit]

    names = list(SYNC_TABLES)
    rows_positions = dict(cursor.rows)
    deletion_positions = dict(cursor.deletions)
    for name in tables:
        rows_positions.setdefault(name, BEGINNING)
        deletion_positions.setdefault(name, BEGINNING)
    row_ids: dict[str, list[int]] = {name: [] for name in tables}
    deleted: dict[str, list[int]] = {name: [] for name in tables}
    for kind, table_index, stamp, item_id, deleted_row_id in keys:  # in (stamp, ...) order
        name = names[table_index]
        if kind == 0:
            deleted[name].append(cast(int, deleted_row_id))  # set on every tombstone
            deletion_positions[name] = (stamp, item_id)
        else:
            row_ids[name].append(item_id)
            rows_positions[name] = (stamp, item_id)

    rows = {name: _fetch_rows(name, user_id, ids) if ids else [] for name, ids in row_ids.items()}
    for name, fetched in rows.items():
        if _has_tombstones(SYNC_TABLES[name]):
            deleted[name] += [row["id"] for row in fetched if row["deleted"]]
            rows[name] = [_without_tombstone_flag(row) for row in fetched if not row["deleted"]]
    return SyncPage(
        tables=rows,
        deleted=deleted,
        cursor=Cursor(
            rows={name: rows_positions[name] for name in names if name in rows_positions},
            deletions={name: deletion_positions[name] for name in names if name in deletion_positions},
        ),
        has_more=has_more,
    )


def read_sync_page(*, user_id: str, cursor: Cursor, tables: list[str], limit: int) -> SyncPage:
    """One page of the user's changes after `cursor`, read from one snapshot (see the module doc)."""
    if connection.in_atomic_block:
        return _read_page(user_id, cursor, tables, limit)
    with transaction.atomic():
        with connection.cursor() as db:
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _read_page(user_id, cursor, tables, limit)
