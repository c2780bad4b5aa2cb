"""Prometheus metrics (SPEC §6, `GET /metrics`).

What is measured:
- `amy_http_requests_total` / `amy_http_request_duration_seconds`: every request, by route
  pattern (`request.resolver_match.route`, never the raw path), method and status
  (`MetricsMiddleware`).
- `amy_webhook_requests_total{outcome}`: the Terra webhook's answers: `accepted`, `duplicate`
  or the rejection's error code (`payload_too_large`, `invalid_signature`, `invalid_json`,
  `unavailable`).
- `amy_normalize_total{event_type,outcome}` / `amy_normalize_duration_seconds{event_type}`:
  deliveries through `raw_event_process` (`outcome` = processed, skipped, parked, retry, dead,
  not_claimed); `amy_normalize_retries_total` and `amy_dead_letters_total{event_type}` alongside.
- Gauges computed at scrape time (`LedgerCollector`): `amy_raw_events{state}` (one grouped
  query), `amy_queue_depth` and `amy_dlq_depth` (Redis LLEN; left out when Redis is down).

Workers and web processes in one scrape: when PROMETHEUS_MULTIPROC_DIR is set (in the
environment of every web and worker process *before* they start), prometheus_client keeps the
counters and histograms in files in that directory and `/metrics` sums them across processes.
The directory must be emptied when the deployment starts (e.g. `rm -rf "$DIR" && mkdir -p "$DIR"`
in the entrypoint), or counts from earlier runs are added in. Without it, `/metrics` shows the
serving process only (fine for a single dev server; worker metrics then never reach it).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import extend_schema
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from admin_ops.auth import AdminApiView

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from rest_framework.request import Request

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

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

UNKNOWN = "unknown"
_event_type: ContextVar[str] = ContextVar("amy_metrics_event_type", default=UNKNOWN)


# Instrumentation hooks (one call each in ingest/) -------------------------------------------------


def webhook_outcome(outcome: str) -> None:
    """Count one webhook answer: `accepted`, `duplicate` or the rejection's error code."""
    WEBHOOK_REQUESTS.labels(outcome=outcome).inc()


def note_event_type(event_type: str) -> None:
    """Tell the current `timed_normalize` delivery which event type it is processing."""
    _event_type.set(event_type or UNKNOWN)


def timed_normalize[F: Callable[..., Any]](process: F) -> F:
    """Decorate `raw_event_process`: count its outcome and time it, labelled by event type."""

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
        event_type = event_type or UNKNOWN
        NORMALIZE_RESULTS.labels(event_type=event_type, outcome=outcome).inc()
        if status == "not_claimed":
            return
        NORMALIZE_LATENCY.labels(event_type=event_type).observe(seconds)
        if status == "retry":
            NORMALIZE_RETRIES.labels(event_type=event_type).inc()
        elif status == "dead":
            DEAD_LETTERS.labels(event_type=event_type).inc()
    except Exception:  # metrics never break processing
        logger.exception("normalize metrics not recorded")


# HTTP middleware ---------------------------------------------------------------------------------


class MetricsMiddleware:
    """Requests by route pattern, method and status, with latency. Unresolved paths are `unmatched`."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        try:
            match = getattr(request, "resolver_match", None)
            route = match.route if match is not None else "unmatched"
            route = "/" + route if not route.startswith("^") else route
            method = request.method or "UNKNOWN"
            HTTP_REQUESTS.labels(route=route, method=method, status=str(response.status_code)).inc()
            HTTP_LATENCY.labels(route=route, method=method).observe(time.perf_counter() - started)
        except Exception:  # metrics never break a request
            logger.exception("http metrics not recorded")
        return response


# Scrape-time gauges ------------------------------------------------------------------------------


class LedgerCollector(Collector):
    """Ledger rows by state (one grouped query) and the broker's queue depths (skipped when down)."""

    def collect(self) -> Iterator[Metric]:
        from django.db import DatabaseError
        from django.db.models import Count

        from admin_ops.services import queue_depths
        from ingest.models import RawEvent, RawEventState

        try:
            counts = dict.fromkeys(RawEventState.values, 0)
            for row in RawEvent.objects.order_by().values("state").annotate(n=Count("id")):
                counts[row["state"]] = row["n"]
        except DatabaseError as exc:
            logger.warning("metrics: ledger counts unavailable: %s", type(exc).__name__)
        else:
            ledger = GaugeMetricFamily("amy_raw_events", "Ledger rows by state.", labels=["state"])
            for state, n in sorted(counts.items()):
                ledger.add_metric([state], n)
            yield ledger

        queue_depth, dlq_depth = queue_depths()
        if queue_depth is not None:
            yield GaugeMetricFamily("amy_queue_depth", "Messages waiting on terra-events.", value=queue_depth)
        if dlq_depth is not None:
            yield GaugeMetricFamily("amy_dlq_depth", "Messages on terra-events-dlq.", value=dlq_depth)


class _ThisProcess(Collector):
    """The default registry (this process's metrics), for single-process mode."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def render() -> bytes:
    """The Prometheus text exposition of every metric (all processes in multiprocess mode)."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(LedgerCollector())
    return generate_latest(registry)


# The endpoint ------------------------------------------------------------------------------------


class MetricsView(AdminApiView):
    """`GET /metrics`: the admin or read key, unless settings.AMY_METRICS_PUBLIC."""

    def get_authenticators(self) -> list[Any]:
        if getattr(settings, "AMY_METRICS_PUBLIC", False):
            return []
        return super().get_authenticators()

    def get_permissions(self) -> list[Any]:
        if getattr(settings, "AMY_METRICS_PUBLIC", False):
            return []
        return super().get_permissions()

    @extend_schema(exclude=True)
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(render(), content_type=CONTENT_TYPE)
