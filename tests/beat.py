"""The Beat schedule as Beat installs it: when `celery beat` starts, django-celery-beat's database
scheduler turns each entry of CELERY_BEAT_SCHEDULE (amy/settings.py) into its rows with
`DatabaseScheduler.Entry.from_entry` (its setup_schedule → update_from_dict). The scheduler itself
is not started here: its syncs close the database connection, which a test's transaction holds."""

from __future__ import annotations

from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from amy.celery import app


def installed_beat_task(name: str) -> PeriodicTask:
    """The periodic task `name` once Beat has installed the settings' schedule on this database."""
    for entry_name, fields in app.conf.beat_schedule.items():
        DatabaseScheduler.Entry.from_entry(entry_name, app=app, **fields)
    return PeriodicTask.objects.get(name=name)
