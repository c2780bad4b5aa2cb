"""Connection lifecycle events: auth, user_reauth, deauth, access_revoked,
connection_error, permission_change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.utils import timezone

from ingest.classify import safe_text
from ingest.errors import BadData
from ingest.models import ConnectionStatus, TerraConnection
from ingest.normalizers.base import EventContext, Normalizer, Outcome, processed, skipped
from ingest.services.connections import (
    connection_appear,
    connection_set_status,
    publish_later,
    request_backfill_later,
)
from ingest.services.erased_users import USER_ERASED, erased_user_event


def _scopes(user: Any) -> str | None:
    return safe_text(user.get("scopes"), 4096) if isinstance(user, dict) else None


def _activate(context: EventContext, *, user_id: str, terra_user_id: str, provider: str, scopes: str | None) -> Outcome:
    connection, unparked = connection_appear(
        user_id=user_id, terra_user_id=terra_user_id, provider=provider, scopes=scopes
    )
    after: list[Callable[[], object]] = [request_backfill_later(connection.pk, settings.AMY_BACKFILL_DAYS)]
    if unparked:
        after.append(publish_later(unparked, context.request_id))
    return processed(user_id=user_id, after_commit=tuple(after))


def auth(context: EventContext) -> Outcome:
    if context.payload.get("status") != "success":
        return skipped("auth")  # a failed connection attempt: nothing exists to update
    user_id = context.reference_id or safe_text(context.payload.get("reference_id")) or ""
    if not context.terra_user_id or not user_id:
        raise BadData("auth success without user.user_id and reference_id")
    if erased_user_event(raw_event_id=context.raw_event_id, user_id=user_id):
        return skipped(USER_ERASED)
    user = context.payload.get("user")
    return _activate(
        context,
        user_id=user_id,
        terra_user_id=context.terra_user_id,
        provider=context.provider,
        scopes=_scopes(user),
    )


def user_reauth(context: EventContext) -> Outcome:
    """The provider account got a new Terra user id: the old connection is replaced by the new."""
    old_user = context.payload.get("old_user")
    old_terra_user_id = safe_text(old_user.get("user_id"), 128) if isinstance(old_user, dict) else None
    old = TerraConnection.objects.filter(terra_user_id=old_terra_user_id).first() if old_terra_user_id else None
    user_id = context.reference_id or (old.user_id if old else "")
    if not context.terra_user_id or not user_id:
        raise BadData("user_reauth without new_user.user_id and a known user")
    if erased_user_event(raw_event_id=context.raw_event_id, user_id=user_id):
        return skipped(USER_ERASED)
    outcome = _activate(
        context,
        user_id=user_id,
        terra_user_id=context.terra_user_id,
        provider=context.provider,
        scopes=_scopes(context.payload.get("new_user")),
    )
    if old is not None and old.terra_user_id != context.terra_user_id:
        old.replaced_by = TerraConnection.objects.get(terra_user_id=context.terra_user_id)
        old.save(update_fields=["replaced_by"])
        connection_set_status(connection=old, status=ConnectionStatus.REPLACED)
    return outcome


def _no_connection(context: EventContext) -> Outcome:
    if erased_user_event(
        raw_event_id=context.raw_event_id, user_id=context.reference_id, terra_user_id=context.terra_user_id
    ):
        return skipped(USER_ERASED)
    return skipped("no_connection")


def _status_change(status: ConnectionStatus) -> Normalizer:
    def normalize(context: EventContext) -> Outcome:
        connection = TerraConnection.objects.select_for_update().filter(terra_user_id=context.terra_user_id).first()
        if connection is None:
            # Nothing to change; replaying a stale status change after a later auth would be wrong.
            return _no_connection(context)
        connection_set_status(connection=connection, status=status)
        return processed(user_id=connection.user_id)

    return normalize


def permission_change(context: EventContext) -> Outcome:
    connection = TerraConnection.objects.select_for_update().filter(terra_user_id=context.terra_user_id).first()
    if connection is None:
        return _no_connection(context)
    # user.scopes is the whole current set; scopes_added/removed only describe the change.
    connection.scopes = _scopes(context.payload.get("user"))
    connection.last_webhook_at = timezone.now()
    connection.save(update_fields=["scopes", "last_webhook_at"])
    return processed(user_id=connection.user_id)


NORMALIZERS: dict[str, Normalizer] = {
    "auth": auth,
    "user_reauth": user_reauth,
    "deauth": _status_change(ConnectionStatus.DEAUTHORIZED),
    "access_revoked": _status_change(ConnectionStatus.REVOKED),
    "connection_error": _status_change(ConnectionStatus.DEGRADED),
    "permission_change": permission_change,
}
