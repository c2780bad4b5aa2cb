"""The end-of-scenario accounting of the fault suite: the stream's deliveries against the scenario's
private database, through the one accounting of the books (harness/books.py).

Every scenario ends with the same checks (a webhook answered 200 is never lost, and no event is
written twice); the stream redelivers like Terra, so every body must have been answered 200 in the
end. Each body of the stream carries one record of its type, hence one typed row per event.
"""

from __future__ import annotations

from typing import Any

from harness.books import Books, SentBody, connect
from harness.books import account as books_account
from tests.faults.stream import Delivery

Accounting = Books
ROWS_PER_TYPE = {"daily": {"daily_summary": 1}, "sleep": {"sleep_sessions": 1}}


def account(database_url: str, deliveries: list[Delivery]) -> Books:
    """The accounting of one scenario's deliveries against its private database."""
    bodies = [SentBody(d.sha256, tuple(d.attempts)) for d in deliveries]
    with connect(database_url) as conn:
        return books_account(conn, bodies, rows_per_type=ROWS_PER_TYPE)


def ledger_rows_of(database_url: str, deliveries: list[Delivery]) -> list[tuple[Any, ...]]:
    """(id, state, attempts, process_error) of the ledger rows of `deliveries`, in their order."""
    keys = [d.sha256 for d in deliveries]
    with connect(database_url) as conn:
        rows = conn.execute(
            "SELECT dedup_key, id, state, attempts, process_error FROM raw_events WHERE dedup_key = ANY(%s)", [keys]
        ).fetchall()
    by_key = {row[0]: row[1:] for row in rows}
    return [by_key.get(key, (None, None, None, None)) for key in keys]
