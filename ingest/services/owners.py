"""Whose rows a data event writes: the Terra connection's user, read under a share lock.

The normalizers are pure (payload in, rows out); this module does the reading and writing around
them: it resolves the owner from `terra_connections` and hands the parsed rows to the writer
inside the worker's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from accounts.models import User
from ingest.errors import BadData
from ingest.models import INACTIVE_CONNECTION_STATUSES, TerraConnection
from ingest.normalizers.base import EventContext, Outcome, ParsedRows, parked, processed, skipped
from ingest.services.connections import connection_appear, connection_touch_later, publish_later, terra_user_lock
from ingest.services.erased_users import USER_ERASED, erased_user_event
from ingest.services.typed_rows import typed_rows_write

logger = logging.getLogger(__name__)

Parser = Callable[[dict], ParsedRows]


@dataclass(frozen=True)
class Owner:
    user_id: str
    provider: str
    after_commit: tuple[Callable[[], object], ...] = ()


def connections_for_share(terra_user_ids: Iterable[str]) -> dict[str, TerraConnection]:
    """The connections of these Terra users, locked FOR SHARE until the transaction ends.

    The share lock keeps the row as read while the event's rows are written: a disconnect with
    erase (which updates the row) waits for events in flight and then deletes their rows too,
    and events after it see the connection deauthorized. Share locks do not conflict with each
    other, so events of one connection still run side by side; they are taken in one statement,
    in terra_user_id order.
    """
    ids = sorted({terra_user_id for terra_user_id in terra_user_ids if terra_user_id})
    if not ids:
        return {}
    rows = TerraConnection.objects.raw(
        "SELECT * FROM terra_connections WHERE terra_user_id = ANY(%s) ORDER BY terra_user_id FOR SHARE", [ids]
    )
    return {connection.terra_user_id: connection for connection in rows}


def resolve_owner(context: EventContext, connections: dict[str, TerraConnection] | None = None) -> Owner | Outcome:
    """The user whose rows these are, or the outcome when there is none to write for.

    `connections`: what `connections_for_share` returned for the batch (a connection that
    appears here is added to it).
    """
    if context.user_id:
        return Owner(context.user_id, context.provider)
    if not context.terra_user_id:
        raise BadData("user.user_id is missing")
    held = connections if connections is not None else connections_for_share([context.terra_user_id])
    connection = held.get(context.terra_user_id)
    after_commit: tuple[Callable[[], object], ...] = ()
    if connection is None:
        # Look again under the lock a new connection takes to un-park: either it sees our park,
        # or we see it (ingest/services/connections.py).
        terra_user_lock(context.terra_user_id)
        connection = connections_for_share([context.terra_user_id]).get(context.terra_user_id)
    if connection is None:
        # user.reference_id is the id we gave Terra when the user connected: a known user's data
        # may arrive before its auth event.
        if erased_user_event(
            raw_event_id=context.raw_event_id, user_id=context.reference_id, terra_user_id=context.terra_user_id
        ):
            return skipped(USER_ERASED)
        if not context.reference_id or not User.objects.filter(pk=context.reference_id).exists():
            return parked("no_connection_for_terra_user")
        connection, unparked = connection_appear(
            user_id=context.reference_id, terra_user_id=context.terra_user_id, provider=context.provider, scopes=None
        )
        if unparked:
            after_commit = (publish_later(unparked, context.request_id),)
    held[context.terra_user_id] = connection
    if connection.status in INACTIVE_CONNECTION_STATUSES:
        return skipped("connection_inactive", user_id=connection.user_id)
    touch = connection_touch_later(connection)
    if touch is not None:
        after_commit = (*after_commit, touch)
    return Owner(connection.user_id, context.provider or connection.provider, after_commit)


def data_event_normalize(context: EventContext, parse: Parser) -> Outcome:
    """One data event on its own: its owner, its parsed rows written (renormalize, replays)."""
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
