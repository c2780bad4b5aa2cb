"""What `GET /metrics` exposes: the HTTP middleware, the scrape-time gauges and the view.

The counters and histograms, and the calls that record them, live in `amy.metrics` (the core
records, this app only exposes). Gauges computed at scrape time (`LedgerCollector`):
`amy_raw_events{state}` (one grouped query), `amy_queue_depth` and `amy_dlq_depth` (Redis LLEN;
left out when Redis is down).

Workers and web processes in one scrape: when PROMETHEUS_MULTIPROC_DIR is set (in the environment
of every web and worker process *before* they start), prometheus_client keeps the counters and
histograms in files in that directory and `/metrics` sums them across processes. The directory
must be emptied when the deployment starts, or counts from earlier runs are added in. Without it,
`/metrics` shows the serving process only.
"""

from __future__ import annotations

import logging
import os
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

from admin_ops.auth import AdminApiView
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
