"""The Celery app: configuration comes from Django settings (the CELERY_ block)."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "amy.settings")

app = Celery("amy")
app.config_from_object("django.conf:settings", namespace="CELERY")
# terra-events carries normalize_raw_event only; amy carries everything else; terra-events-dlq is
# a parking lot of copies for operators' tools, with no consumer (PostgreSQL is the DLQ of record).
app.conf.task_queues = (Queue("terra-events"), Queue("amy"), Queue("terra-events-dlq"))
app.autodiscover_tasks()
