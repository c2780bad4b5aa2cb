"""The periodic tasks are declared once, in settings, and Beat installs exactly those."""

from __future__ import annotations

import pytest
from django.conf import settings
from django_celery_beat.models import PeriodicTask

from tests.beat import installed_beat_task

pytestmark = pytest.mark.django_db


def test_beat_installs_every_task_of_the_settings_schedule_on_the_amy_queue() -> None:
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        task = installed_beat_task(name)
        assert (task.task, task.queue, task.enabled) == (entry["task"], "amy", True)
        assert str(task.crontab.timezone) == "UTC"


def test_the_migrations_install_no_schedule_of_their_own() -> None:
    assert not PeriodicTask.objects.filter(name__in=list(settings.CELERY_BEAT_SCHEDULE)).exists()
