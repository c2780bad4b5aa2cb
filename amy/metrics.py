"""The service's Prometheus counters and histograms, and the calls that record them.

The core (ingest, accounts, the Celery tasks) records here; the ops app (`admin_ops.metrics`)
only exposes: the HTTP middleware, the scrape-time gauges and the `/metrics` view live there.

What is measured:
- `amy_http_requests_total` / `amy_http_request_duration_seconds`: every request, by route
  pattern (never the raw path), method and status.
- `amy_webhook_requests_total{outcome}`: the Terra webhook's answers: `accepted`, `duplicate`
  or the rejection's error code.
- `amy_normalize_total{event_type,outcome}` / `amy_normalize_duration_seconds{event_type}`:
  deliveries through the normalizer (`outcome` = processed, skipped, parked, retry, dead,
  not_claimed); `amy_normalize_retries_total` and `amy_dead_letters_total{event_type}` alongside.
- `amy_celery_tasks_total{task,outcome}` and `amy_celery_task_last_success_timestamp_seconds{task}`:
  every Celery task run by the workers (the drain's heartbeat is what the alert rules watch).

Every label comes from a known, finite set, so no caller can grow the scrape: an event type the
normalizers do not know is `other`, an HTTP method outside the standard ones is `OTHER`, a task
not registered with the Celery app is `other` (tests/admin_ops/test_metrics.py pins this).

Processes on one machine share one `PROMETHEUS_MULTIPROC_DIR` (prometheus_client's multiprocess
mode), set before they start and emptied when they start; docs/deployment.md says how each
container or machine gets its own and how Prometheus scrapes them all.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Container
from contextvars import ContextVar
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter("amy_http_requests", "HTTP requests answered.", ["route", "method", "status"])
HTTP_LATENCY = Histogram(
    "amy_http_request_duration_seconds", "HTTP request latency.", ["route", "method"], buckets=_LATENCY_BUCKETS
)
WEBHOOK_REQUESTS = Counter("amy_webhook_requests", "Terra webhook deliveries by outcome.", ["outcome"])
NORMALIZE_RESULTS = Counter(
    "amy_normalize", "Ledger deliveries through the normalizer, by outcome.", ["event_type", "outcome"]
)
NORMALIZE_LATENCY = Histogram(
    "amy_normalize_duration_seconds", "Normalize latency per delivery.", ["event_type"], buckets=_LATENCY_BUCKETS
)
NORMALIZE_RETRIES = Counter("amy_normalize_retries", "Normalize failures scheduled for a retry.", ["event_type"])
DEAD_LETTERS = Counter("amy_dead_letters", "Ledger rows dead-lettered by the normalizer.", ["event_type"])
CELERY_TASKS = Counter("amy_celery_tasks", "Celery task runs by outcome.", ["task", "outcome"])
CELERY_TASK_LAST_SUCCESS = Gauge(
    "amy_celery_task_last_success_timestamp_seconds",
    "Unix time of the task's last successful run.",
    ["task"],
    multiprocess_mode="max",
)

UNKNOWN = "unknown"
OTHER = "other"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
TASK_OUTCOMES = frozenset({"success", "failure", "retry"})
_event_type: ContextVar[str] = ContextVar("amy_metrics_event_type", default=UNKNOWN)


@functools.cache
def known_event_types() -> frozenset[str]:
    """The event types the normalizers know (the only values of an `event_type` label)."""
    from ingest.normalizers import NORMALIZERS

    return frozenset(NORMALIZERS)


def event_type_label(event_type: str | None) -> str:
    """`event_type` when the normalizers know it, `unknown` when absent, otherwise `other`."""
    if not event_type:
        return UNKNOWN
    return event_type if event_type in known_event_types() else OTHER


def method_label(method: str | None) -> str:
    method = (method or "").upper()
    return method if method in HTTP_METHODS else "OTHER"


# Recording ----------------------------------------------------------------------------------------


def webhook_outcome(outcome: str) -> None:
    """Count one webhook answer: `accepted`, `duplicate` or the rejection's error code."""
    WEBHOOK_REQUESTS.labels(outcome=outcome).inc()


def note_event_type(event_type: str) -> None:
    """Tell the current `timed_normalize` delivery which event type it is processing."""
    _event_type.set(event_type or UNKNOWN)


def timed_normalize[F: Callable[..., Any]](process: F) -> F:
    """Decorate a single delivery's processing: count its outcome and time it, by event type."""

    @functools.wraps(process)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _event_type.set(UNKNOWN)
        started = time.perf_counter()
        try:
            result = process(*args, **kwargs)
            normalize_record(_event_type.get(), result, time.perf_counter() - started)
            return result
        finally:
            _event_type.reset(token)

    return wrapper  # type: ignore[return-value]


def normalize_record(event_type: str, result: Any, seconds: float) -> None:
    """Count one delivery's result (a ProcessResult) and its latency, for deliveries that
    `timed_normalize` does not wrap (a batch's events)."""
    try:
        status = str(result.status)
        outcome = str(result.state) if status == "done" and result.state else status
        label = event_type_label(event_type)
        NORMALIZE_RESULTS.labels(event_type=label, outcome=outcome).inc()
        if status == "not_claimed":
            return
        NORMALIZE_LATENCY.labels(event_type=label).observe(seconds)
        if status == "retry":
            NORMALIZE_RETRIES.labels(event_type=label).inc()
        elif status == "dead":
            DEAD_LETTERS.labels(event_type=label).inc()
    except Exception:  # metrics never break processing
        logger.exception("normalize metrics not recorded")


def http_request(route: str, method: str | None, status: int, seconds: float) -> None:
    """Count one HTTP answer by route pattern, method and status, with its latency."""
    method = method_label(method)
    HTTP_REQUESTS.labels(route=route, method=method, status=str(status)).inc()
    HTTP_LATENCY.labels(route=route, method=method).observe(seconds)


def task_run(task: str, outcome: str, known_tasks: Container[str]) -> None:
    """Count one Celery task run; a success also stamps the task's last-success time."""
    try:
        name = task if task in known_tasks else OTHER
        CELERY_TASKS.labels(task=name, outcome=outcome if outcome in TASK_OUTCOMES else OTHER).inc()
        if outcome == "success":
            CELERY_TASK_LAST_SUCCESS.labels(task=name).set(time.time())
    except Exception:  # metrics never break a task
        logger.exception("task metrics not recorded")


def connect_task_signals() -> None:
    """Count every Celery task run in the process that runs it (called once per process at startup)."""
    from celery.signals import task_failure, task_retry, task_success

    def on_success(sender: Any = None, **kwargs: Any) -> None:
        _record_task(sender, "success")

    def on_failure(sender: Any = None, **kwargs: Any) -> None:
        _record_task(sender, "failure")

    def on_retry(sender: Any = None, **kwargs: Any) -> None:
        _record_task(sender, "retry")

    task_success.connect(on_success, weak=False, dispatch_uid="amy.metrics.task_success")
    task_failure.connect(on_failure, weak=False, dispatch_uid="amy.metrics.task_failure")
    task_retry.connect(on_retry, weak=False, dispatch_uid="amy.metrics.task_retry")


def _record_task(task: Any, outcome: str) -> None:
    name = getattr(task, "name", None) or OTHER
    app = getattr(task, "app", None)
    task_run(name, outcome, app.tasks if app is not None else ())
