"""TerraTask: the base of the tasks that call Terra (backfill, lab submission, account erasure).

Its retries wait at least as long as Terra's Retry-After asked: Celery's autoretry computes an
exponential backoff with full jitter, which can be far shorter than a 429's Retry-After, and
retrying sooner only earns another 429 and spends a retry.

A message waiting on its countdown is held, unacknowledged, by the worker that fetched it. Held
longer than the broker's visibility timeout, Redis hands it to a worker again, and both copies run:
a lab report sent to Terra twice. So no countdown outlives `longest_countdown()`; a longer wait is
a chain of hops, each a new message under that bound carrying the time the work is due
(`NOT_BEFORE_HEADER`), and a hop that arrives early only sends the next hop. Hops are not retries:
they spend none of `max_retries`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task
from celery.exceptions import Retry
from django.conf import settings

logger = logging.getLogger(__name__)

# Terra may ask for a long pause (an account-wide rate limit); past this we try again anyway.
MAX_RETRY_AFTER_SECONDS = 3600
NOT_BEFORE_HEADER = "amy_not_before"
# The margin the settings check keeps for the +20 % jitter of retry countdowns.
_JITTER_MARGIN = 1.2


def longest_countdown() -> float:
    """The longest a message may wait for its countdown and still run and be acknowledged inside
    the broker's visibility timeout, with the jitter margin."""
    return (settings.AMY_VISIBILITY_TIMEOUT - settings.AMY_TASK_TIME_LIMIT) / _JITTER_MARGIN


class TerraTask(Task):
    def retry(
        self, *args: Any, exc: BaseException | None = None, countdown: float | None = None, **options: Any
    ) -> Any:
        asked = getattr(exc, "retry_after", None)
        if options.get("eta") is None:
            if asked is not None:
                countdown = max(countdown or 0, min(float(asked), MAX_RETRY_AFTER_SECONDS))
            if countdown is not None and countdown > longest_countdown():
                not_before = time.time() + countdown
                options["headers"] = {**(options.get("headers") or {}), NOT_BEFORE_HEADER: not_before}
                countdown = longest_countdown()
        return super().retry(*args, exc=exc, countdown=countdown, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        not_before = _not_before(request)
        # Eager runs (tests, `apply`) skip countdowns altogether, hops included.
        waiting = not_before is not None and time.time() < not_before
        if waiting and not request.is_eager and not request.called_directly:
            self._hop(not_before)  # type: ignore[arg-type]
        return super().__call__(*args, **kwargs)

    def _hop(self, not_before: float) -> None:
        """Send the next hop towards `not_before` (same retry count) and end this delivery."""
        request = self.request
        countdown = min(max(not_before - time.time(), 0.0), longest_countdown())
        headers = {**(request.headers or {}), NOT_BEFORE_HEADER: not_before}
        self.signature_from_request(
            request, countdown=countdown, retries=request.retries, headers=headers
        ).apply_async()
        logger.info("%s[%s] waits %.0f s more before it runs", self.name, request.id, not_before - time.time())
        raise Retry(f"due at {not_before:.0f}", when=countdown)


def _not_before(request: Any) -> float | None:
    value = (request.headers or {}).get(NOT_BEFORE_HEADER, getattr(request, NOT_BEFORE_HEADER, None))
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
