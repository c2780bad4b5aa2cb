"""The Celery app: configuration comes from Django settings (the CELERY_ block)."""

from __future__ import annotations

import contextlib
import logging
import os
from functools import partial
from typing import Any

from celery import Celery
from celery.signals import task_postrun
from celery.worker.consumer import Consumer
from celery.worker.state import active_requests
from django.db import close_old_connections
from kombu import Exchange, Queue

from ingest.queues import DEFAULT_QUEUE, DLQ_QUEUE, NORMALIZE_QUEUE

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "amy.settings")

logger = logging.getLogger(__name__)

app = Celery("amy")
app.config_from_object("django.conf:settings", namespace="CELERY")
# terra-events carries normalize_raw_event only; amy carries everything else; terra-events-dlq is
# a parking lot of copies for operators' tools, with no consumer (PostgreSQL is the DLQ of record).
# Tasks are sent to their queue by name, whatever its binding. The dead-letter copy is published
# through the queue's binding, so it has an exchange and routing key of its own: left blank, Celery
# fills in the default ones (`amy`, `amy`), shared by the worker's queues, and each copy reached
# all three; a process that had not loaded Celery's queue table sent it to a list named "".
DEAD_LETTER_QUEUE = Queue(DLQ_QUEUE, Exchange(DLQ_QUEUE, type="direct"), routing_key=DLQ_QUEUE)
app.conf.task_queues = (Queue(NORMALIZE_QUEUE), Queue(DEFAULT_QUEUE), DEAD_LETTER_QUEUE)
app.conf.worker_consumer = "amy.celery:QuickReconnectConsumer"
app.autodiscover_tasks()

# Seconds between a worker's attempts to reach the broker again: kombu's default grows by 2 s per
# attempt up to 30 s, so a worker could wait half a minute after Redis came back.
RECONNECT_INTERVALS = {"interval_start": 0.0, "interval_step": 0.5, "interval_max": 1.0}


class QuickReconnectConsumer(Consumer):
    """The worker's consumer, reconnecting to the broker at most a second apart, and surviving
    the loss of the broker connection while it holds unacknowledged messages."""

    def ensure_connected(self, conn: Any) -> Any:
        conn.ensure_connection = partial(conn.ensure_connection, **RECONNECT_INTERVALS)
        try:
            return super().ensure_connected(conn)
        finally:
            del conn.ensure_connection

    def on_connection_error_after_connected(self, exc: BaseException) -> None:
        # Closing the lost connection restores its unacknowledged messages through a connection
        # that Celery's cleanup has already released (kombu's Redis channel then reads the
        # hostname of None): the AttributeError escaped as an "Unrecoverable error" and the worker
        # exited for good (seen in the Redis fault test of tests/faults/test_stream_faults.py).
        # Those messages stay in Redis's unacked set, restored after the visibility timeout; the
        # rows they point at are PostgreSQL's to finish (lease, drain). The rest of the cleanup
        # still runs, and the consumer reconnects.
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError:
            logger.warning(
                "broker connection lost with unacked messages; left to the visibility timeout", exc_info=True
            )
            self.connection = None
            if self.app.conf.worker_cancel_long_running_tasks_on_connection_loss:
                for request in tuple(active_requests):
                    if request.task.acks_late and not request.acknowledged:
                        with contextlib.suppress(Exception):
                            request.cancel(self.pool)


@task_postrun.connect
def close_unusable_db_connections(**kwargs: Any) -> None:
    """Connections are reused across tasks (CELERY_DB_REUSE_MAX); one that failed is not."""
    close_old_connections()
