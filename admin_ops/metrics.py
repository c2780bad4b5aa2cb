"""What `GET /metrics` exposes: the HTTP middleware, the scrape-time gauges and the view.

The counters and histograms, and the calls that record them, live in `amy.metrics` (the core
records, this app only exposes). Gauges computed at scrape time (`LedgerCollector`), each from a
partial index of few rows, never a count of the whole ledger:
- `amy_raw_events{state}`: rows received, processing, parked and dead (the terminal states,
  most of the ledger, are left to the counters);
- `amy_backlog_oldest_age_seconds`: the oldest waiting row's age (0 when none waits), and
  `amy_drain_window_seconds`, after which such a row is dead-lettered as stale;
- `amy_queue_depth` and `amy_dlq_depth` (Redis LLEN; left out when Redis is down).

Processes on one machine in one scrape: when PROMETHEUS_MULTIPROC_DIR is set (in the environment
of every web and worker process *before* they start), prometheus_client keeps the counters and
histograms in files in that directory and `/metrics` sums them across processes. The directory
is emptied when the processes start, or counts from earlier runs are added in; it is never shared
between containers or machines (process ids would collide): there each worker serves its own
pool's metrics (`serve_worker_metrics`) and Prometheus scrapes every web and worker
(docs/deployment.md, deploy/prometheus/).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import extend_schema
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from admin_ops.auth import AdminApiView, AdminKeyAuthentication
from amy import metrics

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from rest_framework.request import Request

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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
            metrics.http_request(route, request.method, response.status_code, time.perf_counter() - started)
        except Exception:  # metrics never break a request
            logger.exception("http metrics not recorded")
        return response


# Scrape-time gauges ------------------------------------------------------------------------------


# Each count reads a partial index of few rows (waiting, parked, dead), never the whole ledger:
# the terminal states (processed, skipped) are most of it and are left to the counters.
_LEDGER_SQL = """
SELECT
    (SELECT count(*) FROM raw_events WHERE state = 'received'),
    (SELECT count(*) FROM raw_events WHERE state = 'processing'),
    (SELECT count(*) FROM raw_events WHERE state = 'parked'),
    (SELECT count(*) FROM raw_events WHERE state = 'dead'),
    (SELECT extract(epoch FROM now() - min(queued_at)) FROM raw_events WHERE state IN ('received', 'processing'))
"""
GAUGE_STATES = ("received", "processing", "parked", "dead")


class LedgerCollector(Collector):
    """The ledger's waiting and failed rows, the oldest waiting row's age, the drain window, and
    the broker's queue depths (left out when Redis is down)."""

    def collect(self) -> Iterator[Metric]:
        from django.db import DatabaseError, connection

        from admin_ops.services import queue_depths

        try:
            with connection.cursor() as cursor:
                cursor.execute(_LEDGER_SQL)
                *counts, oldest_age = cursor.fetchone()
        except DatabaseError as exc:
            logger.warning("metrics: ledger counts unavailable: %s", type(exc).__name__)
        else:
            ledger = GaugeMetricFamily(
                "amy_raw_events", "Ledger rows waiting (received, processing), parked or dead.", labels=["state"]
            )
            for state, n in zip(GAUGE_STATES, counts, strict=True):
                ledger.add_metric([state], n)
            yield ledger
            yield GaugeMetricFamily(
                "amy_backlog_oldest_age_seconds",
                "Age of the oldest ledger row waiting for a worker (0 when none waits).",
                value=float(oldest_age or 0),
            )
        yield GaugeMetricFamily(
            "amy_drain_window_seconds",
            "Rows waiting longer than this are dead-lettered as stale (AMY_DRAIN_WINDOW_SECONDS).",
            value=settings.AMY_DRAIN_WINDOW_SECONDS,
        )

        queue_depth, dlq_depth = queue_depths()
        if queue_depth is not None:
            yield GaugeMetricFamily("amy_queue_depth", "Messages waiting on terra-events.", value=queue_depth)
        if dlq_depth is not None:
            yield GaugeMetricFamily("amy_dlq_depth", "Messages on terra-events-dlq.", value=dlq_depth)


class _ThisProcess(Collector):
    """The default registry (this process's metrics), for single-process mode."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def registry_of_processes() -> CollectorRegistry:
    """This machine's processes: every process writing to PROMETHEUS_MULTIPROC_DIR, or this one."""
    registry = CollectorRegistry(auto_describe=False)
    if settings.PROMETHEUS_MULTIPROC_DIR:
        MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    return registry


def render() -> bytes:
    """The Prometheus text exposition of every metric (all processes in multiprocess mode)."""
    registry = registry_of_processes()
    registry.register(LedgerCollector())
    return generate_latest(registry)


# A worker's own endpoint ---------------------------------------------------------------------------


def serve_worker_metrics(**kwargs: Any) -> None:
    """In a Celery worker's main process (the `worker_ready` signal): serve its pool's counters on
    AMY_WORKER_METRICS_PORT, when set. A worker in its own container or on its own machine does not
    share a metrics directory with the web, so Prometheus scrapes each worker here (no key: bind it
    to an address only Prometheus reaches; docs/deployment.md). The ledger gauges stay on the web's
    `/metrics`."""
    port = settings.AMY_WORKER_METRICS_PORT
    if not port:
        return
    from prometheus_client import start_http_server

    address = settings.AMY_WORKER_METRICS_ADDR
    try:
        start_http_server(port, addr=address, registry=registry_of_processes())
    except OSError as exc:  # the port is taken (another worker on this machine): work on without
        logger.error("worker metrics not served on %s:%d: %s", address, port, exc)
        return
    logger.info("worker metrics on http://%s:%d/metrics", address, port)


# The endpoint ------------------------------------------------------------------------------------


class MetricsKeyAuthentication(AdminKeyAuthentication):
    """The key in `x-admin-key`, or as `Authorization: Bearer <key>`: Prometheus's scrape config
    sends the latter (`authorization: {credentials_file: ...}`) and no custom header."""

    def given_key(self, request: Request) -> str | None:
        given = super().given_key(request)
        if given:
            return given
        scheme, _, credentials = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return credentials.strip() or None


class MetricsView(AdminApiView):
    """`GET /metrics`: the admin or read key, unless settings.AMY_METRICS_PUBLIC."""

    def get_authenticators(self) -> list[Any]:
        if settings.AMY_METRICS_PUBLIC:
            return []
        return [MetricsKeyAuthentication()]

    def get_permissions(self) -> list[Any]:
        if settings.AMY_METRICS_PUBLIC:
            return []
        return list(super().get_permissions())

    @extend_schema(exclude=True)
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(render(), content_type=CONTENT_TYPE)
