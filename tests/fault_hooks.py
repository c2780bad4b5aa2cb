"""Event types that exist only in tests, registered into the normalizer registry on import.

The test worker loads this module with `celery worker --include tests.fault_hooks`; production
code has no knowledge of it. Each type lets a test make processing slow, fail or kill its worker.
"""

from __future__ import annotations

import os
import signal
import time

import redis
from django.conf import settings

from ingest.errors import BadData
from ingest.normalizers import NORMALIZERS
from ingest.normalizers.base import EventContext, Outcome, processed

COMPLETED_KEY = "amy-test:completed:{raw_event_id}"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def _sleep(context: EventContext) -> Outcome:
    time.sleep(float(context.payload.get("seconds", 1)))
    # Counts completed runs, so a test can tell "processed once" from "processed twice".
    _redis().incr(COMPLETED_KEY.format(raw_event_id=context.raw_event_id))
    return processed()


def _kill_worker(context: EventContext) -> Outcome:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def _always_fail(context: EventContext) -> Outcome:
    raise ConnectionError("upstream unavailable (test)")


def _bad_data(context: EventContext) -> Outcome:
    raise BadData("impossible payload (test)")


NORMALIZERS.update(
    {
        "test.sleep": _sleep,
        "test.kill_worker": _kill_worker,
        "test.always_fail": _always_fail,
        "test.bad_data": _bad_data,
    }
)
