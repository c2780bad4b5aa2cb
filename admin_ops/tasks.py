"""Celery entry points of admin_ops: the trace retention job."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from admin_ops.models import TraceEvent

logger = logging.getLogger(__name__)

_DELETE_BATCH = 10_000


def traces_prune(*, older_than_days: int | None = None) -> int:
    """Delete trace rows older than the retention age, in batches; return how many went."""
    days = older_than_days if older_than_days is not None else settings.AMY_TRACE_RETENTION_DAYS
    cutoff = timezone.now() - timedelta(days=days)
    deleted = 0
    while True:
        ids = list(TraceEvent.objects.filter(ts__lt=cutoff).values_list("id", flat=True)[:_DELETE_BATCH])
        if not ids:
            break
        deleted += TraceEvent.objects.filter(id__in=ids).delete()[0]
    logger.info("prune_traces: %d trace rows older than %d days deleted", deleted, days)
    return deleted


@shared_task(name="admin_ops.prune_traces")
def prune_traces() -> int:
    return traces_prune()
