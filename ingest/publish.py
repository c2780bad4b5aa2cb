"""Nudges on Redis: publish raw-event ids to `terra-events`, never failing the caller.

A failed publish is logged and left to the drain: the row is already durable in PostgreSQL.
Tasks are sent by name so that services need not import the tasks module (which imports them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from functools import partial

from django.conf import settings
from django.db import transaction
from kombu.exceptions import KombuError
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from amy.celery import app as celery_app

logger = logging.getLogger(__name__)

NORMALIZE_TASK = "ingest.normalize_raw_event"
NORMALIZE_QUEUE = "terra-events"
DLQ_QUEUE = "terra-events-dlq"

# Kept short: the webhook must answer well inside Terra's 8 s even when Redis hangs.
_RETRY_POLICY = {"max_retries": 0}
_BROKER_ERRORS = (KombuError, KombuOperationalError, RedisError, OSError, TimeoutError)

_blocked_until = 0.0


def publish_raw_events(raw_event_ids: Iterable[int], request_id: str | None = None) -> int:
    """Publish one nudge per id over one connection; return how many went out."""
    sent = 0
    try:
        with celery_app.producer_or_acquire() as producer:
            for raw_event_id in raw_event_ids:
                celery_app.send_task(
                    NORMALIZE_TASK,
                    kwargs={"raw_event_id": raw_event_id, "request_id": request_id},
                    queue=NORMALIZE_QUEUE,
                    producer=producer,
                    retry=True,
                    retry_policy=_RETRY_POLICY,
                )
                sent += 1
    except _BROKER_ERRORS as exc:
        logger.warning("publish failed after %d nudges, the drain will pick the rest up: %r", sent, exc)
    return sent


def _publish_once(raw_event_id: int, request_id: str | None) -> None:
    global _blocked_until
    if time.monotonic() < _blocked_until:
        logger.info("broker cooling down; raw_event %d left to the drain", raw_event_id)
        return
    if publish_raw_events([raw_event_id], request_id) == 0:
        _blocked_until = time.monotonic() + settings.AMY_PUBLISH_COOLDOWN_SECONDS


def publish_after_commit(raw_event_id: int, request_id: str | None) -> None:
    """Nudge a worker once the current transaction commits.

    `robust=True` so that a publish error can never surface in the caller (Celery's
    `delay_on_commit` would turn a Redis outage into a 500 for a row that was stored).
    """
    transaction.on_commit(partial(_publish_once, raw_event_id, request_id), robust=True)


def publish_dead_letter_copy(message: dict[str, object]) -> None:
    """A copy of a dead-lettered event on `terra-events-dlq`, for operators' tools."""
    queue = next(q for q in celery_app.conf.task_queues if q.name == DLQ_QUEUE)
    try:
        with celery_app.producer_or_acquire() as producer:
            producer.publish(
                message,
                routing_key=queue.routing_key,
                exchange=queue.exchange,
                serializer="json",
                declare=[queue],
                retry=True,
                retry_policy=_RETRY_POLICY,
            )
    except _BROKER_ERRORS as exc:
        logger.warning("dead-letter copy not published (the row stays dead in PostgreSQL): %r", exc)
