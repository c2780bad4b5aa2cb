"""typed_rows_write: parsed rows into the typed tables, one bulk upsert per table.

Which copy wins: a copy replaces the stored values when its (`ordering_ts`, `raw_event_id`) is at
least the stored pair — `ordering_ts` is Terra's `x-terra-ordering-timestamp` (a missing one sorts
lowest) and the ledger id breaks ties, so an older copy redelivered after a newer one never rolls
the values back, and re-running the same event (renormalize) re-applies it. We compare the
delivery header rather than the payload's own times because Terra documents it as the recency of a
record, and a day's running total has no time of its own that grows.

An update that would change nothing is skipped (so `updated_at` only moves on real changes), and
the statement reports inserted and changed rows, which renormalize sums up.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db import connection

from ingest.models import TypedRow
from ingest.normalizers.base import ParsedRows, WriteStats


def _column(model: type[TypedRow], field_name: str) -> str:
    return model._meta.get_field(field_name).column


def _upsert_sql(model: type[TypedRow], columns: list[str], row_count: int) -> str:
    table = model._meta.db_table
    keys = [_column(model, name) for name in model.NATURAL_KEY]
    merged = {_column(model, name) for name in model.MERGED_FIELDS}
    updated = [c for c in columns if c not in keys]

    def new_value(column: str) -> str:
        if column in merged:
            return f"COALESCE(EXCLUDED.{column}, {table}.{column})"
        return f"EXCLUDED.{column}"

    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return f"""
INSERT INTO {table} ({", ".join(columns)})
VALUES {", ".join([placeholders] * row_count)}
ON CONFLICT ({", ".join(keys)}) DO UPDATE SET
    {", ".join(f"{c} = {new_value(c)}" for c in updated)}, updated_at = now()
WHERE (COALESCE(EXCLUDED.ordering_ts, -1), COALESCE(EXCLUDED.raw_event_id, 0))
      >= (COALESCE({table}.ordering_ts, -1), COALESCE({table}.raw_event_id, 0))
  AND ({", ".join(f"{table}.{c}" for c in updated)})
      IS DISTINCT FROM ({", ".join(new_value(c) for c in updated)})
RETURNING (xmax = 0)
"""


def _upsert(model: type[TypedRow], rows: list[dict[str, Any]]) -> WriteStats:
    # One natural key may appear twice in one payload (a device re-sending a record within a
    # chunk); PostgreSQL refuses to update a row twice in one statement, so the last copy wins.
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        by_key[tuple(row[name if name in row else f"{name}_id"] for name in model.NATURAL_KEY)] = row
    unique_rows = list(by_key.values())
    field_names = sorted({name for row in unique_rows for name in row})
    columns = [_column(model, name) for name in field_names]
    params = [row.get(name) for row in unique_rows for name in field_names]
    with connection.cursor() as cursor:
        cursor.execute(_upsert_sql(model, columns, len(unique_rows)), params)
        results = [inserted for (inserted,) in cursor.fetchall()]
    inserted = sum(results)
    changed = len(results) - inserted
    return WriteStats(inserted=inserted, changed=changed, unchanged=len(unique_rows) - len(results))


def typed_rows_write(
    parsed: ParsedRows,
    *,
    user_id: str,
    provider: str,
    terra_user_id: str,
    raw_event_id: int,
    ordering_ts: int | None,
) -> WriteStats:
    """Upsert the parsed rows (and apply their deletions) in the caller's transaction."""
    shared = {
        "user_id": user_id,
        "provider": provider,
        "terra_user_id": terra_user_id,
        "raw_event_id": raw_event_id,
        "ordering_ts": ordering_ts,
    }
    stats = WriteStats()
    grouped: dict[type[TypedRow], list[dict[str, Any]]] = defaultdict(list)
    for model, values in parsed.rows:
        grouped[model].append({**shared, **values})
    for model, rows in grouped.items():
        stats += _upsert(model, rows)
    for model, key in parsed.deletions:
        deleted, _ = model._default_manager.filter(user_id=user_id, provider=provider, **key).delete()
        stats.deleted += deleted
    return stats
