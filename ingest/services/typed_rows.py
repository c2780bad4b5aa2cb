"""typed_rows_write: parsed rows into the typed tables, one bulk upsert per table.

Which copy wins: a copy replaces the stored values when its (`ordering_ts`, `raw_event_id`) is at
least the stored pair — `ordering_ts` is Terra's `x-terra-ordering-timestamp` (a missing one sorts
lowest) and the ledger id breaks ties, so an older copy redelivered after a newer one never rolls
the values back, and re-running the same event (renormalize) re-applies it. We compare the
delivery header rather than the payload's own times because Terra documents it as the recency of a
record, and a day's running total has no time of its own that grows.

A copy that would change no stored value leaves the row untouched, its `raw_event_id`,
`ordering_ts` and `updated_at` included: the sync stamp then stays too, so `/v1/sync` does not
re-send a row a nightly backfill re-delivered unchanged. (The stored ordering pair is then the
older copy's; a copy ordered between the two can still replace the values. Identical values make
that harmless unless that middle copy arrives last, which Terra's ordering makes rare.)

Many events at once (a worker's batch): each natural key is written once, by the copy the ordering
rule picks among the batch's copies (merged fields filled from the copies it replaces, as one
after the other would have), so one statement never updates a row twice. Tables are written in one
fixed order and rows in natural-key order, so that two writers of the same rows take their locks
in the same order and wait for each other instead of deadlocking.

The statements report inserted and changed rows, which renormalize sums up.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from django.db import connection, models

from ingest.models import TypedRow
from ingest.normalizers.base import ParsedRows, WriteStats

# Columns that say which copy a row came from, not what it holds: a copy differing only there
# changes nothing.
_PROVENANCE_COLUMNS = frozenset({"raw_event_id", "ordering_ts"})
# Rows per statement: bounds the statement's size; chunks follow the key order.
_CHUNK_ROWS = 1000
_DELETE = None


@dataclass(frozen=True)
class EventRows:
    """One event's parsed rows and the columns every one of its rows shares."""

    parsed: ParsedRows
    user_id: str
    provider: str
    terra_user_id: str
    raw_event_id: int
    ordering_ts: int | None

    @property
    def order(self) -> tuple[int, int]:
        # The ordering rule's pair, as the upsert's WHERE compares it.
        return (self.ordering_ts if self.ordering_ts is not None else -1, self.raw_event_id or 0)


def _column(model: type[TypedRow], field_name: str) -> str:
    field = model._meta.get_field(field_name)
    if not isinstance(field, models.Field) or field.column is None:
        raise LookupError(f"{model.__name__}.{field_name} is not a column")
    return field.column


def _upsert_sql(model: type[TypedRow], columns: list[str]) -> str:
    """One upsert of any number of rows: a text array per column, unnested into rows in their order.

    The statement's text depends on the table and columns only, and has one placeholder per
    column: binding thousands of separate values client-side cost the worker a third of its time.
    """
    table = model._meta.db_table
    keys = [_column(model, name) for name in model.NATURAL_KEY]
    merged = {_column(model, name) for name in model.MERGED_FIELDS}
    updated = [c for c in columns if c not in keys]
    compared = [c for c in updated if c not in _PROVENANCE_COLUMNS]
    types = {field.column: field.db_type(connection) for field in model._meta.concrete_fields}

    def new_value(column: str) -> str:
        if column in merged:
            return f"COALESCE(EXCLUDED.{column}, {table}.{column})"
        return f"EXCLUDED.{column}"

    changes = (
        f"(ROW({', '.join(f'{table}.{c}' for c in compared)})) IS DISTINCT FROM "
        f"(ROW({', '.join(new_value(c) for c in compared)}))"
        if compared
        else "FALSE"
    )
    return f"""
INSERT INTO {table} ({", ".join(columns)})
SELECT {", ".join(f"v.{c}::{types[c]}" for c in columns)}
FROM unnest({", ".join(["%s::text[]"] * len(columns))}) AS v({", ".join(columns)})
ON CONFLICT ({", ".join(keys)}) DO UPDATE SET
    {", ".join(f"{c} = {new_value(c)}" for c in updated)}, updated_at = now()
WHERE (COALESCE(EXCLUDED.ordering_ts, -1), COALESCE(EXCLUDED.raw_event_id, 0))
      >= (COALESCE({table}.ordering_ts, -1), COALESCE({table}.raw_event_id, 0))
  AND {changes}
RETURNING (xmax = 0)
"""


def _as_text(value: Any) -> str | None:
    # As PostgreSQL reads it back through the column's cast: dates and times in ISO form.
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def upsert_statement(
    model: type[TypedRow], field_names: list[str], rows: list[dict[str, Any]]
) -> tuple[str, list[Any]]:
    """The upsert of `rows` (distinct natural keys, in the order given) and its parameters."""
    columns = [_column(model, name) for name in field_names]
    params = [[_as_text(row.get(name)) for row in rows] for name in field_names]
    return _upsert_sql(model, columns), params


def _natural_key(model: type[TypedRow], row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[name if name in row else f"{name}_id"] for name in model.NATURAL_KEY)


def _sort_key(key: tuple[Any, ...]) -> tuple[tuple[bool, Any], ...]:
    return tuple((value is None, value) for value in key)


def _upsert_chunk(model: type[TypedRow], field_names: list[str], rows: list[dict[str, Any]]) -> WriteStats:
    sql, params = upsert_statement(model, field_names, rows)
    connection.ensure_connection()
    # Bound server-side, in binary, on the transaction's own connection: the arrays go as they are
    # (client-side binding quoted every element in Python), and the statement, whose text depends
    # on the table and columns only, is prepared once per connection.
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, binary=True)
        results = [inserted for (inserted,) in cursor.fetchall()]
    inserted = sum(results)
    return WriteStats(inserted=inserted, changed=len(results) - inserted, unchanged=len(rows) - len(results))


def _upsert(model: type[TypedRow], rows: list[dict[str, Any]]) -> WriteStats:
    """Rows with distinct natural keys, in the order given."""
    stats = WriteStats()
    field_names = sorted({name for row in rows for name in row})
    for start in range(0, len(rows), _CHUNK_ROWS):
        stats += _upsert_chunk(model, field_names, rows[start : start + _CHUNK_ROWS])
    return stats


def _winners(writes: list[EventRows]) -> dict[type[TypedRow], dict[tuple[Any, ...], dict[str, Any] | None]]:
    """Per table and natural key, what the batch leaves: the values of the copy the ordering rule
    picks (merged fields kept from the copies before it when it has none), or a deletion."""
    copies: dict[type[TypedRow], dict[tuple[Any, ...], list[tuple[tuple[int, int, int], dict[str, Any] | None]]]]
    copies = defaultdict(lambda: defaultdict(list))
    for write in writes:
        shared = {
            "user_id": write.user_id,
            "provider": write.provider,
            "terra_user_id": write.terra_user_id,
            "raw_event_id": write.raw_event_id,
            "ordering_ts": write.ordering_ts,
        }
        position = 0
        for model, values in write.parsed.rows:
            full_row = {**shared, **values}
            copies[model][_natural_key(model, full_row)].append(((*write.order, position), full_row))
            position += 1
        for model, key_values in write.parsed.deletions:
            key = _natural_key(model, {**shared, **key_values})
            copies[model][key].append(((*write.order, position), _DELETE))
            position += 1
    winners: dict[type[TypedRow], dict[tuple[Any, ...], dict[str, Any] | None]] = {}
    for model, by_key in copies.items():
        chosen: dict[tuple[Any, ...], dict[str, Any] | None] = {}
        for key, candidates in by_key.items():
            current: dict[str, Any] | None = _DELETE
            for _, row in sorted(candidates, key=lambda candidate: candidate[0]):
                if row is not _DELETE and current is not _DELETE:
                    row = {**row}
                    for name in model.MERGED_FIELDS:
                        if row.get(name) is None and current.get(name) is not None:
                            row[name] = current[name]
                current = row
            chosen[key] = current
        winners[model] = chosen
    return winners


def typed_rows_write_many(writes: list[EventRows], *, in_key_order: bool = True) -> WriteStats:
    """Upsert the rows (and apply the deletions) of many events, in the caller's transaction.

    `in_key_order=False` keeps the order the rows came in (one event's rows: a lab report's
    biomarkers are listed in the order they were written) at the price of the lock order.
    """
    stats = WriteStats()
    winners = _winners(writes)
    for model in sorted(winners, key=lambda m: m._meta.db_table):
        keys = sorted(winners[model], key=_sort_key) if in_key_order else list(winners[model])
        rows = [row for key in keys if (row := winners[model][key]) is not _DELETE]
        if rows:
            stats += _upsert(model, rows)
        for key in keys:
            if winners[model][key] is _DELETE:
                deleted, _ = model._default_manager.filter(**dict(zip(model.NATURAL_KEY, key, strict=True))).delete()
                stats.deleted += deleted
    return stats


def typed_rows_write(
    parsed: ParsedRows,
    *,
    user_id: str,
    provider: str,
    terra_user_id: str,
    raw_event_id: int,
    ordering_ts: int | None,
) -> WriteStats:
    """Upsert one event's parsed rows (and apply its deletions) in the caller's transaction, in the
    order they came in."""
    return typed_rows_write_many(
        [
            EventRows(
                parsed,
                user_id=user_id,
                provider=provider,
                terra_user_id=terra_user_id,
                raw_event_id=raw_event_id,
                ordering_ts=ordering_ts,
            )
        ],
        in_key_order=False,
    )
