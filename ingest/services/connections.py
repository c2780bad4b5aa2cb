"""Terra connections: activation, status changes and the events parked waiting for one."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from functools import partial

from django.db.models.functions import Now
from django.utils import timezone

from accounts.models import User
from ingest.locks import advisory_xact_lock
from ingest.models import ConnectionStatus, RawEvent, RawEventState, TerraConnection
from ingest.publish import publish_raw_events, publish_task
from ingest.queues import BACKFILL_TASK, DEFAULT_QUEUE

logger = logging.getLogger(__name__)


def connection_activate(*, user_id: str, terra_user_id: str, provider: str, scopes: str | None) -> TerraConnection:
    """Create or reactivate the connection of `terra_user_id`, creating its user when new."""
    user, _ = User.objects.get_or_create(id=user_id)
    connection, created = TerraConnection.objects.select_for_update().get_or_create(
        terra_user_id=terra_user_id,
        defaults={
            "user": user,
            "provider": provider,
            "scopes": scopes,
            "status": ConnectionStatus.ACTIVE,
            "last_webhook_at": timezone.now(),
        },
    )
    if not created:
        connection.user = user
        connection.provider = provider or connection.provider
        connection.scopes = scopes if scopes is not None else connection.scopes
        if connection.status != ConnectionStatus.ACTIVE:
            connection.connected_at = timezone.now()
        connection.status = ConnectionStatus.ACTIVE
        connection.disconnected_at = None
        connection.replaced_by = None
        connection.last_webhook_at = timezone.now()
        connection.save()
    return connection


def terra_user_lock(terra_user_id: str) -> None:
    """Serialize, until the current transaction ends, parking and un-parking for one Terra user.

    Without it, an event parked by a transaction that commits just after a new connection's
    un-parking query ran would wait for a connection that already exists.
    """
    advisory_xact_lock(f"terra_user:{terra_user_id}")


def connection_appear(
    *, user_id: str, terra_user_id: str, provider: str, scopes: str | None
) -> tuple[TerraConnection, list[int]]:
    """Activate a connection and move the events parked waiting for it back to `received`.

    Returns the connection and the ids to publish once the transaction commits.
    """
    terra_user_lock(terra_user_id)
    connection = connection_activate(user_id=user_id, terra_user_id=terra_user_id, provider=provider, scopes=scopes)
    return connection, raw_events_unpark(terra_user_id=terra_user_id)


def connection_set_status(*, connection: TerraConnection, status: ConnectionStatus) -> None:
    connection.status = status
    connection.last_webhook_at = timezone.now()
    if status in (ConnectionStatus.DEAUTHORIZED, ConnectionStatus.REVOKED, ConnectionStatus.REPLACED):
        connection.disconnected_at = timezone.now()
    connection.save(update_fields=["status", "disconnected_at", "last_webhook_at"])


# last_webhook_at is "recently", not "this event": writing it for every event would lock the
# connection row in every transaction and cost a round trip per event.
_TOUCH_EVERY = timedelta(seconds=60)


def connection_touch_later(connection: TerraConnection) -> Callable[[], None] | None:
    """Record that the connection is sending, at most once a minute, after the commit.

    After, not inside: the event's transaction holds the connection row FOR SHARE, and two events
    upgrading their share locks to write it would deadlock each other.
    """
    now = timezone.now()
    if connection.last_webhook_at is not None and now - connection.last_webhook_at <= _TOUCH_EVERY:
        return None
    # The events after this one that see this same object (a batch's held connection) need no touch.
    connection.last_webhook_at = now

    def touch() -> None:
        TerraConnection.objects.filter(pk=connection.pk).update(last_webhook_at=Now())

    return touch


def raw_events_unpark(*, terra_user_id: str) -> list[int]:
    """Move events parked for this Terra user back to `received`; return their ids to publish."""
    ids = list(
        RawEvent.objects.filter(terra_user_id=terra_user_id, state=RawEventState.PARKED).values_list("pk", flat=True)
    )
    if ids:
        RawEvent.objects.filter(pk__in=ids, state=RawEventState.PARKED).update(
            state=RawEventState.RECEIVED, queued_at=Now(), process_error=None, lease_until=None
        )
        logger.info("unparked %d events of terra user %s", len(ids), terra_user_id)
    return ids


def publish_later(raw_event_ids: list[int], request_id: str | None) -> partial[int]:
    return partial(publish_raw_events, raw_event_ids, request_id)


def request_backfill_later(connection_id: int, days: int) -> partial[None]:
    return partial(_send_backfill, connection_id, days)


def _send_backfill(connection_id: int, days: int) -> None:
    # A broker error must not fail the event: logged, and the nightly reconcile asks Terra again.
    publish_task(BACKFILL_TASK, {"connection_id": connection_id, "days": days}, queue=DEFAULT_QUEUE)
