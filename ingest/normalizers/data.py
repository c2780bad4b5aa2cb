"""Data events (daily, sleep, activity, ...): whose rows they are, then parse and write.

A pure parser (one module per Terra type) turns the payload into rows; this module resolves the
owner from the Terra connection and hands the rows to the writer inside the worker's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from accounts.models import User
from ingest.errors import BadData
from ingest.models import INACTIVE_CONNECTION_STATUSES, TerraConnection
from ingest.normalizers.base import EventContext, Normalizer, Outcome, ParsedRows, parked, processed, skipped
from ingest.services.connections import connection_appear, connection_touch_later, publish_later, terra_user_lock
from ingest.services.erased_users import USER_ERASED, erased_user_event
from ingest.services.typed_rows import typed_rows_write

logger = logging.getLogger(__name__)

Parser = Callable[[dict[str, Any]], ParsedRows]


@dataclass(frozen=True)
class Owner:
    user_id: str
    provider: str
    after_commit: tuple[Callable[[], None], ...] = ()


# Connections this transaction already holds FOR SHARE, while `connections_held` is on.
_held: ContextVar[dict[str, TerraConnection] | None] = ContextVar("amy_connections_held", default=None)


@contextmanager
def connections_held() -> Iterator[None]:
    """Within it, a connection locked once is reused by the next data events of its Terra user.

    Only for a run of data events in one transaction (or one savepoint) that is never partly
    rolled back: the share lock keeps the row as read until the transaction ends, and data events
    never write it (their touch runs after the commit). Anything that writes connections (the
    lifecycle events) must run outside it, or after `connections_forget()`.
    """
    token = _held.set({})
    try:
        yield
    finally:
        _held.reset(token)


def connections_forget() -> None:
    """Drop what `connections_held` kept (before an event that may write a connection)."""
    held = _held.get()
    if held is not None:
        held.clear()


def _connection_for_share(terra_user_id: str) -> TerraConnection | None:
    # FOR SHARE until this event's rows commit: a disconnect-with-erase (which updates the row)
    # waits for events in flight and then deletes their rows too, and events after it see the
    # connection deauthorized. Events of one connection still run side by side.
    held = _held.get()
    if held is not None and terra_user_id in held:
        return held[terra_user_id]
    connection = next(
        iter(
            TerraConnection.objects.raw(
                "SELECT * FROM terra_connections WHERE terra_user_id = %s FOR SHARE", [terra_user_id]
            )
        ),
        None,
    )
    if held is not None and connection is not None:
        held[terra_user_id] = connection
    return connection


def resolve_owner(context: EventContext) -> Owner | Outcome:
    """The user whose rows these are, or the outcome when there is none to write for."""
    if context.user_id:
        return Owner(context.user_id, context.provider)
    if not context.terra_user_id:
        raise BadData("user.user_id is missing")
    connection = _connection_for_share(context.terra_user_id)
    after_commit: tuple[Callable[[], None], ...] = ()
    if connection is None:
        # Look again under the lock a new connection takes to un-park: either it sees our park,
        # or we see it (ingest/services/connections.py).
        terra_user_lock(context.terra_user_id)
        connection = _connection_for_share(context.terra_user_id)
    if connection is None:
        # user.reference_id is the id we gave Terra when the user connected: a known user's data
        # may arrive before its auth event.
        if context.reference_id and erased_user_event(raw_event_id=context.raw_event_id, user_id=context.reference_id):
            return skipped(USER_ERASED)
        if not context.reference_id or not User.objects.filter(pk=context.reference_id).exists():
            return parked("no_connection_for_terra_user")
        connection, unparked = connection_appear(
            user_id=context.reference_id, terra_user_id=context.terra_user_id, provider=context.provider, scopes=None
        )
        if unparked:
            after_commit = (publish_later(unparked, context.request_id),)
    if connection.status in INACTIVE_CONNECTION_STATUSES:
        return skipped("connection_inactive", user_id=connection.user_id)
    touch = connection_touch_later(connection)
    if touch is not None:
        after_commit = (*after_commit, touch)
    return Owner(connection.user_id, context.provider or connection.provider, after_commit)


def data_event(parse: Parser) -> Normalizer:
    """A normalizer that writes what `parse` reads from the payload, for the event's owner."""

    def normalize(context: EventContext) -> Outcome:
        owner = resolve_owner(context)
        if isinstance(owner, Outcome):
            return owner
        parsed = parse(context.payload)
        for warning in parsed.warnings:
            logger.warning("raw_event %d: %s", context.raw_event_id, warning)
        written = typed_rows_write(
            parsed,
            user_id=owner.user_id,
            provider=owner.provider,
            terra_user_id=context.terra_user_id,
            raw_event_id=context.raw_event_id,
            ordering_ts=context.ordering_ts,
        )
        return processed(user_id=owner.user_id, after_commit=owner.after_commit, written=written)

    return normalize
