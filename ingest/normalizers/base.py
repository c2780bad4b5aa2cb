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


@dataclass(frozen=True)
class Outcome:
    state: str
    reason: str | None = None
    user_id: str | None = None
    # Work for after the commit (a nudge, a backfill request): never inside the transaction.
    after_commit: tuple[Callable[[], None], ...] = field(default=())


def processed(user_id: str | None = None, after_commit: tuple[Callable[[], None], ...] = ()) -> Outcome:
    return Outcome(RawEventState.PROCESSED, user_id=user_id, after_commit=after_commit)


def skipped(reason: str, user_id: str | None = None) -> Outcome:
    return Outcome(RawEventState.SKIPPED, reason=f"skipped:{reason}", user_id=user_id)


def parked(reason: str) -> Outcome:
    return Outcome(RawEventState.PARKED, reason=reason)


Normalizer = Callable[[EventContext], Outcome]
