"""connection_backfill: ask Terra to re-send recent data of one connection through the webhook."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from ingest.models import ConnectionStatus, TerraConnection
from ingest.terra_client import BACKFILL_TYPES, TerraClient

logger = logging.getLogger(__name__)


def connection_backfill(*, connection_id: int, days: int, client: TerraClient | None = None) -> list[str]:
    """Request `days` of each backfill type; return the types requested.

    Raises TerraUnavailable (retry) or TerraRejected (give up). Types already requested before a
    failure are requested again on retry: Terra's answers are delivered through the idempotent
    webhook path, so a repeat costs a redelivery, never a duplicate row.
    """
    if not settings.TERRA_API_CONFIGURED:
        logger.info("backfill of connection %d skipped: TERRA_DEV_ID/TERRA_API_KEY not set", connection_id)
        return []
    connection = TerraConnection.objects.filter(pk=connection_id).first()
    if connection is None or connection.status not in (ConnectionStatus.ACTIVE, ConnectionStatus.DEGRADED):
        logger.info("backfill of connection %d skipped: gone or inactive", connection_id)
        return []
    end = timezone.now().date()
    start = end - timedelta(days=days)
    with client or TerraClient() as terra:
        for data_type in BACKFILL_TYPES:
            terra.request_backfill(data_type=data_type, terra_user_id=connection.terra_user_id, start=start, end=end)
    logger.info("backfill of %d days requested for connection %d", days, connection_id)
    return list(BACKFILL_TYPES)
