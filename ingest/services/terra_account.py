"""A user's Terra account from the API's side: connect, refresh, disconnect, erase.

- `connect_session`: a Terra Connect widget session whose reference id is the user's id, so that
  the `auth` webhook names the user.
- `connections_refresh_if_due`: `GET /v1/me` asks Terra for the user's Terra users at most once per
  REFRESH_INTERVAL_SECONDS, within REFRESH_BUDGET_SECONDS, and reports whether what it serves may
  be stale.
- `connection_disconnect`: deauthorize at Terra first, then mark the connection `deauthorized`
  and, when asked, erase its data, in one transaction.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from accounts.models import User
from ingest.models import (
    TYPED_MODELS,
    Biomarker,
    ConnectionStatus,
    RawEvent,
    RawEventState,
    TerraConnection,
    TypedRow,
)
from ingest.services.connections import terra_user_lock
from ingest.terra_client import TerraClient, TerraError, TerraNotConfigured

logger = logging.getLogger(__name__)

# GET /v1/me: Terra is asked at most this often per user ...
REFRESH_INTERVAL_SECONDS = 300
# ... and a failed refresh is tried again after this long (meanwhile `connections_stale` is true
# without another call, so a Terra outage costs one slow /v1/me per user per minute, not each one).
REFRESH_RETRY_SECONDS = 60
# The refresh's time budget: one deadline for the whole call, from connecting to the last byte of
# Terra's answer (not a timeout per phase, which a slow Terra could spend one after another).
REFRESH_BUDGET_SECONDS = 2.0

_REFRESH_PENDING, _REFRESH_FRESH, _REFRESH_FAILED = "pending", "fresh", "failed"

# The typed tables that hold one connection's data (biomarkers come from lab uploads, not from a
# connection, so erasing a connection keeps them).
CONNECTION_TABLES: tuple[type[TypedRow], ...] = tuple(model for model in TYPED_MODELS if model is not Biomarker)


# Connect --------------------------------------------------------------------------------------------


def connect_session(*, user: User, provider: str | None, redirect_url: str | None) -> dict[str, Any]:
    """A widget session for the user → `{"widget_url", "session_id", "expires_in"}`.

    Raises TerraNotConfigured, TerraUnavailable or TerraRejected.
    """
    if not settings.TERRA_API_CONFIGURED:
        raise TerraNotConfigured("TERRA_DEV_ID/TERRA_API_KEY are not set")
    with TerraClient() as terra:
        session = terra.generate_widget_session(
            user.pk, providers=[provider] if provider else None, redirect_url=redirect_url
        )
    return {"widget_url": session["url"], "session_id": session["session_id"], "expires_in": session["expires_in"]}


# Refresh (GET /v1/me) --------------------------------------------------------------------------------


def connections_refresh_key(user_id: str) -> str:
    # User ids are the identity provider's subjects: hashed so any character is a safe key.
    return f"amy:me-refresh:{hashlib.sha256(user_id.encode()).hexdigest()[:32]}"


def connections_refresh_if_due(*, user: User, client: TerraClient | None = None) -> bool:
    """Refresh the user's connections from Terra when due; return `connections_stale`.

    Stale is true when a refresh was due and failed (Terra down, slow past the budget, an answer we
    cannot read), or when the last attempt within REFRESH_RETRY_SECONDS failed, or when the cache
    that spaces the refreshes is unreachable (no refresh is attempted then: without it every call
    could cost up to the budget). False when Terra is not configured, when the connections were
    refreshed within REFRESH_INTERVAL_SECONDS, and while another request is refreshing them.
    """
    if not settings.TERRA_API_CONFIGURED:
        return False
    key = connections_refresh_key(user.pk)
    try:
        # add() is atomic: of concurrent requests, exactly one claims the refresh.
        if not cache.add(key, _REFRESH_PENDING, timeout=REFRESH_INTERVAL_SECONDS):
            return cache.get(key) == _REFRESH_FAILED
    except Exception as exc:  # noqa: BLE001 - the cache is an optimisation; /v1/me must still answer
        logger.warning("connections refresh skipped: cache unavailable (%s)", type(exc).__name__)
        return True
    try:
        with client or TerraClient(timeout=REFRESH_BUDGET_SECONDS) as terra:
            terra_users = terra.user_info(user.pk, deadline=REFRESH_BUDGET_SECONDS)
        changed = connections_apply_terra_users(user=user, terra_users=terra_users)
    except TerraError as exc:
        logger.warning("connections refresh from Terra failed: %s", exc)
        _cache_set(key, _REFRESH_FAILED, REFRESH_RETRY_SECONDS)
        return True
    except Exception:  # a bug here must not fail /v1/me, which can serve what is stored
        logger.exception("connections refresh failed")
        _cache_set(key, _REFRESH_FAILED, REFRESH_RETRY_SECONDS)
        return True
    if changed:
        logger.info("connections refresh updated %d connections", changed)
    _cache_set(key, _REFRESH_FRESH, REFRESH_INTERVAL_SECONDS)
    return False


def _cache_set(key: str, value: str, timeout: int) -> None:
    try:
        cache.set(key, value, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - see connections_refresh_if_due
        logger.warning("connections refresh state not cached (%s)", type(exc).__name__)


def connections_apply_terra_users(*, user: User, terra_users: list[dict[str, Any]]) -> int:
    """Update the user's stored connections from Terra's TerraUser objects; return how many changed.

    Conservative on purpose; webhooks stay the authority on a connection's life:
    - only connections that already belong to `user` are touched: a Terra user stored for another
      of our users, or one whose `reference_id` is not this user's id, is ignored, and none is
      created (the `auth` webhook, or the first data event naming the user, creates it, with its
      backfill and un-parking);
    - `provider` and `scopes` are taken when Terra gives them;
    - `active: false` turns an `active` connection `degraded` (still reconciled and still
      ingested), never `revoked`/`deauthorized`; `active: true` changes nothing (a `degraded`
      connection recovers through the `auth` webhook, an inactive one through a new `auth`).
    """
    changed = 0
    for item in terra_users:
        terra_user_id = item.get("user_id")
        if not isinstance(terra_user_id, str) or not terra_user_id:
            continue
        reference_id = item.get("reference_id")
        if reference_id is not None and reference_id != user.pk:
            continue
        with transaction.atomic():
            connection = (
                TerraConnection.objects.select_for_update().filter(terra_user_id=terra_user_id, user=user).first()
            )
            if connection is None:
                continue
            updates: dict[str, Any] = {}
            provider = item.get("provider")
            if isinstance(provider, str) and provider and provider[:64] != connection.provider:
                updates["provider"] = provider[:64]
            scopes = item.get("scopes")
            if isinstance(scopes, str) and scopes != connection.scopes:
                updates["scopes"] = scopes
            if item.get("active") is False and connection.status == ConnectionStatus.ACTIVE:
                updates["status"] = ConnectionStatus.DEGRADED
            if updates:
                for name, value in updates.items():
                    setattr(connection, name, value)
                connection.save(update_fields=list(updates))
                changed += 1
    return changed


# Disconnect (DELETE /v1/connections/<id>) -------------------------------------------------------------


@dataclass(frozen=True)
class EraseResult:
    typed_rows: int
    raw_events: int


def connection_disconnect(
    *, user: User, connection_id: int, erase: bool, client: TerraClient | None = None
) -> TerraConnection | None:
    """Deauthorize the user's connection at Terra, then mark it `deauthorized` (and erase its data).

    Returns None when the user has no such connection. Raises TerraNotConfigured, TerraUnavailable
    or TerraRejected (Terra's 404 is not an error: the Terra user is gone already) before anything
    changes locally. A connection already `deauthorized` is not sent to Terra again (it was
    deauthorized there, by us or by Terra's own `deauth`); the call is then idempotent and may still
    erase.
    """
    connection = TerraConnection.objects.filter(pk=connection_id, user=user).first()
    if connection is None:
        return None
    if connection.status != ConnectionStatus.DEAUTHORIZED:
        if not settings.TERRA_API_CONFIGURED:
            raise TerraNotConfigured("TERRA_DEV_ID/TERRA_API_KEY are not set")
        with client or TerraClient() as terra:
            terra.deauthenticate(connection.terra_user_id)
    with transaction.atomic():
        connection = TerraConnection.objects.select_for_update().filter(pk=connection_id, user=user).first()
        if connection is None:  # deleted meanwhile (the user erased)
            return None
        if connection.status != ConnectionStatus.DEAUTHORIZED:
            connection.status = ConnectionStatus.DEAUTHORIZED
            # Kept when already set: a revoked or replaced connection stopped sending back then.
            connection.disconnected_at = connection.disconnected_at or timezone.now()
            connection.save(update_fields=["status", "disconnected_at"])
        if erase:
            result = connection_data_erase(connection=connection)
            logger.info(
                "connection %d erased: %d typed rows deleted, %d ledger payloads redacted",
                connection.pk,
                result.typed_rows,
                result.raw_events,
            )
    return connection


def connection_data_erase(*, connection: TerraConnection) -> EraseResult:
    """Delete the connection's typed rows and redact its ledger payloads, in the caller's transaction.

    Typed rows: every connection table, rows of this user and this Terra user. Ledger: every row of
    this Terra user (not imported by another user) keeps its metadata as a tombstone with `payload`
    NULL; rows still waiting for a worker or a connection (`received`, `parked`) are marked
    `skipped:connection_inactive` (what the worker would decide for a deauthorized connection) so
    they do not dead-letter as "payload erased".
    """
    if not connection.terra_user_id:  # never: the column is required; "" would match lab reports
        return EraseResult(typed_rows=0, raw_events=0)
    # Serializes with parking/un-parking of this Terra user (ingest/services/connections.py).
    terra_user_lock(connection.terra_user_id)
    typed_rows = 0
    for model in CONNECTION_TABLES:
        deleted, _ = model._default_manager.filter(
            user_id=connection.user_id, terra_user_id=connection.terra_user_id
        ).delete()
        typed_rows += deleted
    # Rows another user imported belong to that user, whatever Terra user they name.
    ledger = RawEvent.objects.filter(
        Q(user_id__isnull=True) | Q(user_id=connection.user_id), terra_user_id=connection.terra_user_id
    )
    ledger.filter(state__in=[RawEventState.RECEIVED, RawEventState.PARKED]).update(
        state=RawEventState.SKIPPED,
        process_error="skipped:connection_inactive",
        processed_at=Now(),
        lease_until=None,
    )
    raw_events = ledger.exclude(payload=None).update(payload=None)
    return EraseResult(typed_rows=typed_rows, raw_events=raw_events)
