"""What a normalizer receives and returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ingest.models import RawEventState


@dataclass(frozen=True)
class EventContext:
    raw_event_id: int
    event_type: str
    terra_user_id: str
    reference_id: str
    provider: str
    ordering_ts: int | None
    request_id: str | None
    payload: dict[str, Any]
    # Set when the ledger row already belongs to a user (imports); else resolved by connection.
    user_id: str | None = None


@dataclass
class WriteStats:
    """Typed rows an event's normalization inserted, changed, left unchanged or deleted."""

    inserted: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0

    def __iadd__(self, other: WriteStats) -> WriteStats:
        self.inserted += other.inserted
        self.changed += other.changed
        self.unchanged += other.unchanged
        self.deleted += other.deleted
        return self


@dataclass(frozen=True)
class Outcome:
    state: str
    reason: str | None = None
    user_id: str | None = None
    # Work for after the commit (a nudge, a backfill request): never inside the transaction.
    after_commit: tuple[Callable[[], object], ...] = field(default=())
    written: WriteStats = field(default_factory=WriteStats)


def processed(
    user_id: str | None = None,
    after_commit: tuple[Callable[[], object], ...] = (),
    written: WriteStats | None = None,
) -> Outcome:
    return Outcome(RawEventState.PROCESSED, user_id=user_id, after_commit=after_commit, written=written or WriteStats())


def skipped(reason: str, user_id: str | None = None) -> Outcome:
    return Outcome(RawEventState.SKIPPED, reason=f"skipped:{reason}", user_id=user_id)


def parked(reason: str) -> Outcome:
    return Outcome(RawEventState.PARKED, reason=reason)


Normalizer = Callable[[EventContext], Outcome]


@dataclass
class ParsedRows:
    """What a pure normalizer returns: rows to upsert and natural keys to delete, per table.

    Each row holds its table's columns (missing values as None) but not the columns every typed
    row shares (user, provider, terra_user_id, raw_event, ordering_ts): the writer adds those.
    """

    rows: list[tuple[type, dict[str, Any]]] = field(default_factory=list)
    deletions: list[tuple[type, dict[str, Any]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, model: type, values: dict[str, Any]) -> None:
        self.rows.append((model, values))


Parser = Callable[[dict[str, Any]], ParsedRows]


@dataclass(frozen=True)
class DataEvent:
    """A data event type's normalizer: its pure parser, and the owner lookup and writes around it.

    The worker runs `parse` itself and writes a whole batch's rows together; called on one event
    (renormalize, a replay's dry run) it does the same for that event alone.
    """

    parse: Parser

    def __call__(self, context: EventContext) -> Outcome:
        # Imported here: the services import the normalizers (their types and parsers).
        from ingest.services.owners import data_event_normalize

        return data_event_normalize(context, self.parse)


def data_event(parse: Parser) -> DataEvent:
    return DataEvent(parse)
