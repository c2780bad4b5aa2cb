"""Messages on Redis: tasks published by name, and the nudges that wake the normalize workers.

A publish never fails its caller: a broker error is logged and the work is left to whatever
catches it later (the drain for ledger rows; each caller says). PostgreSQL holds the truth.
Tasks are sent by name so that services need not import the tasks module (which imports them).

Nudges are coalesced: a worker that takes a nudge claims every waiting row, batch after batch
(ingest/services/processing.py), so a row stored while a nudge waits on `terra-events` needs no
nudge of its own. The check is the queue's length, read right before publishing: whatever sits
in the queue will be taken after this row was committed, and its delivery's claims will see the
row. (Two publishers may both see an empty queue and both publish; an extra nudge costs one
statement.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from kombu.exceptions import KombuError
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from amy.celery import app as celery_app
from ingest.queues import DLQ_QUEUE, NORMALIZE_QUEUE, NORMALIZE_TASK

logger = logging.getLogger(__name__)

__all__ = ["DLQ_QUEUE", "NORMALIZE_QUEUE", "NORMALIZE_TASK"]

# Kept short: the webhook must answer well inside Terra's 8 s even when Redis hangs.
_RETRY_POLICY = {"max_retries": 0}
# What a broker outage raises, whichever layer notices it first.
BROKER_ERRORS = (KombuError, KombuOperationalError, RedisError, OSError, TimeoutError)

_blocked_until = 0.0


def _send(name: str, kwargs: Mapping[str, Any], *, queue: str, producer: Any, countdown: float | None) -> None:
    celery_app.send_task(
        name,
        kwargs=dict(kwargs),
        queue=queue,
        producer=producer,
        countdown=countdown,
        retry=True,
        retry_policy=_RETRY_POLICY,
    )


def publish_task(name: str, kwargs: Mapping[str, Any], *, queue: str, countdown: float | None = None) -> bool:
    """Publish one task by name; False (logged) when the broker refused it."""
    try:
        with celery_app.producer_or_acquire() as producer:
            _send(name, kwargs, queue=queue, producer=producer, countdown=countdown)
    except BROKER_ERRORS as exc:
        logger.warning("task %s not queued on %s: %r", name, queue, exc)
        return False
    return True


def publish_raw_event_nudges(nudges: Iterable[tuple[int, str | None]]) -> int:
    """One nudge per (raw_event_id, request_id) over one connection; how many went out."""
    sent = 0
    try:
        with celery_app.producer_or_acquire() as producer:
            for raw_event_id, request_id in nudges:
                _send(
                    NORMALIZE_TASK,
                    {"raw_event_id": raw_event_id, "request_id": request_id},
                    queue=NORMALIZE_QUEUE,
                    producer=producer,
                    countdown=None,
                )
                sent += 1
    except BROKER_ERRORS as exc:
        logger.warning("publish failed after %d nudges, the drain will pick the rest up: %r", sent, exc)
    return sent


def publish_raw_events(raw_event_ids: Iterable[int], request_id: str | None = None) -> int:
    """Publish one nudge per id (all carrying `request_id`) over one connection; how many went out."""
    return publish_raw_event_nudges((raw_event_id, request_id) for raw_event_id in raw_event_ids)


def _nudge_pending(producer: Any) -> bool:
    channel = producer.channel
    if not hasattr(channel, "conn_or_acquire"):  # not Redis: no cheap look at the queue
        return False
    with channel.conn_or_acquire() as client:
        return bool(client.llen(NORMALIZE_QUEUE))


def nudge_workers(raw_event_id: int | None = None, request_id: str | None = None) -> bool | None:
    """Wake a normalize worker unless a nudge already waits in the queue (module docstring).

    True when a nudge was published, False when one was pending already, None when the broker
    failed (logged; the drain finds the rows).
    """
    try:
        with celery_app.producer_or_acquire() as producer:
            if settings.AMY_NORMALIZE_BATCH_SIZE > 0 and _nudge_pending(producer):
                return False
            _send(
                NORMALIZE_TASK,
                {"raw_event_id": raw_event_id, "request_id": request_id},
                queue=NORMALIZE_QUEUE,
                producer=producer,
                countdown=None,
            )
    except BROKER_ERRORS as exc:
        logger.warning("nudge not published, the drain will pick the rows up: %r", exc)
        return None
    return True


def _publish_once(raw_event_id: int, request_id: str | None) -> None:
    global _blocked_until
    if time.monotonic() < _blocked_until:
        logger.info("broker cooling down; raw_event %d left to the drain", raw_event_id)
        return
    if nudge_workers(raw_event_id, request_id) is None:
        _blocked_until = time.monotonic() + settings.AMY_PUBLISH_COOLDOWN_SECONDS


def publish_after_commit(raw_event_id: int, request_id: str | None) -> None:
    """Nudge a worker once the current transaction commits (coalesced: see the module docstring).

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
    except BROKER_ERRORS as exc:
        logger.warning("dead-letter copy not published (the row stays dead in PostgreSQL): %r", exc)
