"""The end-of-scenario accounting: what Terra was told (answered 200) against what PostgreSQL holds.

Every scenario ends with the same checks (a webhook answered 200 is never lost, and no event is
written twice):
- every body was answered 200 in the end (Terra redelivers the others), and each one that was is
  exactly one ledger row (by sha256 of the body, the ledger's dedup key), whose payload is the
  body byte for byte; the ledger holds nothing that was not sent;
- every ledger row is final: processed, skipped, parked, or dead with a readable error; none is
  left `received` or `processing`;
- typed rows are not duplicated: no natural key twice, and each processed data event wrote its
  one row, pointing at its own ledger row.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tests.faults.stream import Delivery

FINAL_STATES = ("processed", "skipped", "parked", "dead")
# event type -> (table, natural key): each body of the stream carries one record of its type.
TYPED_TABLES = {
    "daily": ("daily_summary", ("user_id", "provider", "date")),
    "sleep": ("sleep_sessions", ("user_id", "provider", "summary_id")),
}


def connect(database_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(database_url.replace("postgres://", "postgresql://"), autocommit=True, connect_timeout=5)


@dataclass
class Accounting:
    sent: int = 0  # distinct bodies
    attempts: int = 0  # deliveries of them, redeliveries included
    answered_200: int = 0  # bodies answered 200 at least once
    never_200: int = 0  # bodies no delivery got a 200 for
    ledger_rows: int = 0
    stored_once: int = 0  # bodies answered 200 with exactly one ledger row
    missing: int = 0  # answered 200, no ledger row: lost
    duplicated: int = 0  # more than one ledger row for one body
    unexpected: int = 0  # ledger rows of no body that was sent
    corrupt: int = 0  # ledger rows whose payload is not the body it claims to be
    states: Counter[str] = field(default_factory=Counter)
    unfinished: int = 0  # received or processing: neither processed nor visibly dead
    dead_without_error: int = 0
    typed_rows: dict[str, int] = field(default_factory=dict)
    typed_expected: dict[str, int] = field(default_factory=dict)
    typed_duplicates: int = 0  # natural keys held by more than one row
    first_outcomes: Counter[str] = field(default_factory=Counter)
    redelivered: int = 0  # bodies whose first delivery was not a 200
    errors: Counter[str] = field(default_factory=Counter)  # process_error of non-processed rows

    @property
    def lost(self) -> int:
        return self.missing + self.unfinished

    def problems(self) -> list[str]:
        found = []
        checks = [
            ("bodies never answered 200", self.never_200),
            ("answered 200 but not in the ledger", self.missing),
            ("bodies with more than one ledger row", self.duplicated),
            ("ledger rows of no body sent", self.unexpected),
            ("ledger rows whose payload is not their body", self.corrupt),
            ("rows neither processed nor visibly dead/marked", self.unfinished),
            ("dead rows without an error", self.dead_without_error),
            ("duplicated typed rows", self.typed_duplicates),
        ]
        found += [f"{what}: {count}" for what, count in checks if count]
        for event_type, expected in self.typed_expected.items():
            if self.typed_rows.get(event_type) != expected:
                found.append(
                    f"{event_type}: {self.typed_rows.get(event_type)} typed rows for {expected} processed events"
                )
        return found

    def __str__(self) -> str:
        typed = ", ".join(f"{t} {self.typed_rows.get(t, 0)}/{n}" for t, n in self.typed_expected.items())
        return (
            f"sent {self.sent} bodies in {self.attempts} deliveries (first answers {dict(self.first_outcomes)}; "
            f"{self.redelivered} redelivered); answered 200: {self.answered_200}; ledger rows: {self.ledger_rows} "
            f"({self.stored_once} exactly once); lost {self.lost}, duplicated {self.duplicated}, "
            f"unexpected {self.unexpected}; states {dict(self.states)}; errors {dict(self.errors)}; "
            f"typed rows (written/processed) {typed}, duplicated typed rows {self.typed_duplicates}"
        )


def account(database_url: str, deliveries: list[Delivery]) -> Accounting:
    """The accounting of one scenario's deliveries against its private database."""
    result = Accounting(
        sent=len(deliveries),
        attempts=sum(len(d.attempts) for d in deliveries),
        answered_200=sum(d.accepted for d in deliveries),
        never_200=sum(not d.accepted for d in deliveries),
        first_outcomes=Counter(d.first for d in deliveries),
        redelivered=sum(d.first != "200" for d in deliveries),
    )
    with connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, dedup_key, event_type, state, process_error, payload FROM raw_events"
        ).fetchall()
        result.ledger_rows = len(rows)
        by_key: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            by_key.setdefault(row[1], []).append(row)
        sent_keys = {d.sha256 for d in deliveries}
        for delivery in deliveries:
            stored = by_key.get(delivery.sha256, [])
            if len(stored) > 1:
                result.duplicated += 1
            if delivery.accepted and not stored:
                result.missing += 1
            if delivery.accepted and len(stored) == 1:
                result.stored_once += 1
        result.unexpected = sum(1 for key in by_key if key not in sent_keys)
        for _id, dedup_key, _type, state, error, payload in rows:
            result.states[state] += 1
            if payload is None or hashlib.sha256(payload.encode()).hexdigest() != dedup_key:
                result.corrupt += 1
            if state not in FINAL_STATES:
                result.unfinished += 1
            if state == "dead" and not error:
                result.dead_without_error += 1
            if state != "processed" and error:
                result.errors[error.split(":")[0]] += 1
        for event_type, (table, key) in TYPED_TABLES.items():
            processed = [r[0] for r in rows if r[2] == event_type and r[3] == "processed"]
            if not processed and not any(r[2] == event_type for r in rows):
                continue
            result.typed_expected[event_type] = len(processed)
            # Each processed event of the stream names a record no other body names: it must have
            # written exactly one row, still pointing at it.
            (written,) = conn.execute(
                f"SELECT count(*) FROM {table} WHERE raw_event_id = ANY(%s)",
                [processed],
            ).fetchone()
            result.typed_rows[event_type] = written
            (duplicates,) = conn.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {table} GROUP BY {', '.join(key)} HAVING count(*) > 1) d"
            ).fetchone()
            result.typed_duplicates += duplicates
    return result


def ledger_rows_of(database_url: str, deliveries: list[Delivery]) -> list[tuple[Any, ...]]:
    """(id, state, attempts, process_error) of the ledger rows of `deliveries`, in their order."""
    keys = [d.sha256 for d in deliveries]
    with connect(database_url) as conn:
        rows = conn.execute(
            "SELECT dedup_key, id, state, attempts, process_error FROM raw_events WHERE dedup_key = ANY(%s)", [keys]
        ).fetchall()
    by_key = {row[0]: row[1:] for row in rows}
    return [by_key.get(key, (None, None, None, None)) for key in keys]
