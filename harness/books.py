"""The books of a run: what the client was told (answered 200) against what PostgreSQL holds.

One accounting for the fault suite (tests/faults/), the soak (tests/test_soak.py, bench/soak.py)
and the end-to-end benchmark (bench/e2e.py). A run balances when:
- every body answered 200 is exactly one ledger row (by sha256 of the body, the ledger's dedup
  key), whose payload is the body byte for byte, and the ledger holds nothing that was not sent;
- every ledger row is final: processed, skipped, parked, or dead with a readable error; none is
  left `received` or `processing`;
- each processed event wrote exactly the typed rows its body makes, pointing at its own ledger row:
  none missing, none doubled.

Whether every body must have been answered 200 in the end depends on the sender: Terra redelivers
until it gets one (the fault suite's stream does too), an open-loop load generator does not.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from harness.markdown import markdown_table

FINAL_STATES = ("processed", "skipped", "parked", "dead")
ANSWERED = "200"

# event type -> {typed table: rows one processed event of that type writes}
RowsPerType = Mapping[str, Mapping[str, int]]


def connect(database_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(database_url.replace("postgres://", "postgresql://"), autocommit=True, connect_timeout=5)


@dataclass(frozen=True)
class SentBody:
    """One distinct body and the outcome of each attempt to deliver it: "200", "HTTP 503", or a
    transport error's name."""

    sha256: str
    outcomes: tuple[str, ...]

    @classmethod
    def of(cls, body: bytes, outcomes: Iterable[str]) -> SentBody:
        return cls(hashlib.sha256(body).hexdigest(), tuple(outcomes))

    @property
    def accepted(self) -> bool:
        return ANSWERED in self.outcomes

    @property
    def first(self) -> str:
        return self.outcomes[0] if self.outcomes else "unsent"


@dataclass
class Books:
    sent: int = 0  # distinct bodies
    attempts: int = 0  # deliveries of them, redeliveries included
    answered_200: int = 0  # bodies answered 200 at least once
    never_200: int = 0  # bodies no delivery got a 200 for
    not_answered: Counter[str] = field(default_factory=Counter)  # their last outcome
    first_outcomes: Counter[str] = field(default_factory=Counter)
    redelivered: int = 0  # bodies whose first delivery was not a 200
    ledger_rows: int = 0
    stored_once: int = 0  # bodies answered 200 with exactly one ledger row
    missing: int = 0  # answered 200, no ledger row: lost
    duplicated: int = 0  # bodies with more than one ledger row
    unexpected: int = 0  # ledger rows of no body that was sent
    stored_without_200: int = 0  # stored though no delivery was answered 200 (a client that gave up)
    corrupt: int = 0  # ledger rows whose payload is not the body they claim to be
    states: Counter[str] = field(default_factory=Counter)
    unfinished: int = 0  # received or processing: neither processed nor visibly dead
    dead_without_error: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # process_error of non-processed rows
    dead_errors: list[str] = field(default_factory=list)  # the first few, for the report
    not_final: list[str] = field(default_factory=list)  # the first few, for the report
    typed_rows: int = 0  # written by the run's events
    typed_duplicated: int = 0  # beyond what the events' bodies make (or of a type they do not make)
    typed_missing: int = 0  # that a processed event's body makes and that are not there
    worker_redeliveries: int = 0  # events delivered to a worker more than once (attempts > 1)

    @property
    def lost(self) -> int:
        """Answered 200 but not in the ledger, or in it and never finished."""
        return self.missing + self.unfinished

    def problems(self, *, every_body_answered: bool = True) -> list[str]:
        checks = [
            ("bodies never answered 200", self.never_200 if every_body_answered else 0),
            ("answered 200 but not in the ledger", self.missing),
            ("bodies with more than one ledger row", self.duplicated),
            ("ledger rows of no body sent", self.unexpected),
            ("ledger rows whose payload is not their body", self.corrupt),
            ("rows neither processed nor visibly dead/marked", self.unfinished),
            ("dead rows without an error", self.dead_without_error),
            ("duplicated typed rows", self.typed_duplicated),
            ("typed rows missing from processed events", self.typed_missing),
        ]
        return [f"{what}: {count}" for what, count in checks if count]

    @property
    def balanced(self) -> bool:
        """Nothing lost, nothing doubled, for a sender that may give up on a body."""
        return not self.problems(every_body_answered=False)

    def __str__(self) -> str:
        return (
            f"sent {self.sent} bodies in {self.attempts} deliveries (first answers {dict(self.first_outcomes)}; "
            f"{self.redelivered} redelivered); answered 200: {self.answered_200}; ledger rows: {self.ledger_rows} "
            f"({self.stored_once} exactly once); lost {self.lost}, duplicated {self.duplicated}, "
            f"unexpected {self.unexpected}; states {dict(self.states)}; errors {dict(self.errors)}; "
            f"typed rows {self.typed_rows} ({self.typed_duplicated} duplicated, {self.typed_missing} missing)"
        )

    def lines(self) -> list[str]:
        """The books as a Markdown table, for a report."""
        states = ", ".join(f"{k} {v}" for k, v in sorted(self.states.items())) or "-"
        rows = [
            ["webhooks sent", str(self.sent)],
            ["answered 200 (a raw_event_id each)", str(self.answered_200)],
            ["not answered 200", ", ".join(f"{k}: {v}" for k, v in self.not_answered.most_common()) or "0"],
            ["ledger rows of the run", str(self.ledger_rows)],
            ["bodies stored more than once", str(self.duplicated)],
            ["answered 200 without a ledger row", str(self.missing)],
            ["stored without a 200 (the client gave up; Terra would redeliver)", str(self.stored_without_200)],
            ["states of the run's rows", states],
            ["lost (answered 200, neither processed nor dead-lettered)", str(self.lost)],
            ["typed rows", str(self.typed_rows)],
            ["duplicated typed rows", str(self.typed_duplicated)],
            ["typed rows missing from processed events", str(self.typed_missing)],
            ["events delivered to a worker more than once (attempts > 1)", str(self.worker_redeliveries)],
        ]
        lines = markdown_table(["check", "count"], rows)
        if self.dead_errors:
            lines += ["", "Dead-lettered (first 5):", *(f"- {e}" for e in self.dead_errors)]
        if self.not_final:
            lines += ["", "Not in a final state (first 5):", *(f"- {e}" for e in self.not_final)]
        return lines


def wait_final(conn: psycopg.Connection[Any], after_id: int, timeout: float) -> int:
    """Wait until every ledger row past `after_id` is in a final state; how many are not."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(
            "SELECT count(*) FROM raw_events WHERE id > %s AND state <> ALL(%s)", [after_id, list(FINAL_STATES)]
        ).fetchone()
        pending = row[0] if row else 0
        if not pending or time.monotonic() > deadline:
            return pending
        time.sleep(0.2)


def account(
    conn: psycopg.Connection[Any], bodies: Iterable[SentBody], *, rows_per_type: RowsPerType, after_id: int = 0
) -> Books:
    """The books of the bodies sent, against the ledger rows past `after_id` (a warm-up's last
    id, or 0 for a database of the run's own)."""
    bodies = list(bodies)
    books = Books(
        sent=len(bodies),
        attempts=sum(len(b.outcomes) for b in bodies),
        answered_200=sum(b.accepted for b in bodies),
        never_200=sum(not b.accepted for b in bodies),
        not_answered=Counter(b.outcomes[-1] if b.outcomes else "unsent" for b in bodies if not b.accepted),
        first_outcomes=Counter(b.first for b in bodies),
        redelivered=sum(b.first != ANSWERED for b in bodies),
    )
    rows = conn.execute(
        "SELECT id, dedup_key, event_type, state, attempts, process_error, payload FROM raw_events WHERE id > %s "
        "ORDER BY id",
        [after_id],
    ).fetchall()
    books.ledger_rows = len(rows)
    by_key: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        by_key[row[1]].append(row)
    sent_keys = {b.sha256 for b in bodies}
    for body in bodies:
        stored = by_key.get(body.sha256, [])
        books.duplicated += len(stored) > 1
        books.missing += body.accepted and not stored
        books.stored_once += body.accepted and len(stored) == 1
        books.stored_without_200 += (not body.accepted) and bool(stored)
    books.unexpected = sum(len(stored) for key, stored in by_key.items() if key not in sent_keys)
    for raw_event_id, dedup_key, _type, state, attempts, error, payload in rows:
        books.states[state] += 1
        if payload is None or hashlib.sha256(payload.encode()).hexdigest() != dedup_key:
            books.corrupt += 1
        if state not in FINAL_STATES:
            books.unfinished += 1
            books.not_final.append(f"raw_event {raw_event_id}: {state}")
        if state == "dead":
            books.dead_errors.append(f"raw_event {raw_event_id}: {error}")
            books.dead_without_error += not error
        if state != "processed" and error:
            books.errors[error.split(":")[0]] += 1
        books.worker_redeliveries += attempts > 1
    books.dead_errors, books.not_final = books.dead_errors[:5], books.not_final[:5]
    _count_typed_rows(conn, books, rows, rows_per_type, after_id)
    return books


def _count_typed_rows(
    conn: psycopg.Connection[Any],
    books: Books,
    rows: list[tuple[Any, ...]],
    rows_per_type: RowsPerType,
    after_id: int,
) -> None:
    """Each event's typed rows against what its body makes, by the raw_event_id they point at."""
    tables = sorted({table for made in rows_per_type.values() for table in made})
    written: dict[int, Counter[str]] = defaultdict(Counter)
    for table in tables:
        for raw_event_id, count in conn.execute(
            f"SELECT raw_event_id, count(*) FROM {table} WHERE raw_event_id > %s GROUP BY raw_event_id", [after_id]
        ).fetchall():
            written[raw_event_id][table] = count
    events = {row[0]: (row[2], row[3]) for row in rows}
    for raw_event_id in set(written) | {i for i, (_, state) in events.items() if state == "processed"}:
        event_type, state = events.get(raw_event_id, ("?", None))
        expected = rows_per_type.get(event_type, {}) if state == "processed" else {}
        got = written.get(raw_event_id, Counter())
        for table in set(expected) | set(got):
            books.typed_duplicated += max(0, got[table] - expected.get(table, 0))
            books.typed_missing += max(0, expected.get(table, 0) - got[table])
    books.typed_rows = sum(sum(c.values()) for c in written.values())
