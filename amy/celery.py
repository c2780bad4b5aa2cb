"""The Celery app: configuration comes from Django settings (the CELERY_ block)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun
from django.db import close_old_connections
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "amy.settings")

app = Celery("amy")
app.config_from_object("django.conf:settings", namespace="CELERY")
# terra-events carries normalize_raw_event only; amy carries everything else; terra-events-dlq is
# a parking lot of copies for operators' tools, with no consumer (PostgreSQL is the DLQ of record).
app.conf.task_queues = (Queue("terra-events"), Queue("amy"), Queue("terra-events-dlq"))
app.autodiscover_tasks()


@task_postrun.connect
def close_unusable_db_connections(**kwargs: Any) -> None:
    """Connections are reused across tasks (CELERY_DB_REUSE_MAX); one that failed is not."""
    close_old_connections()
