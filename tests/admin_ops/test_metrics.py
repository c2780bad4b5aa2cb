"""`GET /metrics`: the key, the Prometheus text, and what the counters and gauges show."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import path
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from admin_ops.metrics import MetricsMiddleware, MetricsView
from amy import metrics
from ingest.models import RawEvent, RawEventState
from ingest.views import TerraWebhookView
from tests.admin_ops.helpers import READ, WRITE, dead
from tests.conftest import PostWebhook
from tests.ledger import deliver, store
from tests.terra import body_of, sample

# This module is its own urlconf: /metrics beside the webhook.
urlpatterns = [
    path("metrics", MetricsView.as_view()),
    path("webhooks/terra", TerraWebhookView.as_view()),
]

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.admin_ops.test_metrics")]


def scrape(client: Client, headers: dict[str, str] | None = READ) -> dict[str, Any]:
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def sample_value(families: dict[str, Any], name: str, sample_name: str | None = None, **labels: str) -> float:
    family = families.get(name)
    if family is None:
        return 0.0
    for s in family.samples:
        if s.name == (sample_name or name) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return 0.0


# The key ------------------------------------------------------------------------------------------


def test_metrics_without_a_key_is_401(client: Client) -> None:
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_authorization"


def test_metrics_with_a_wrong_key_is_401(client: Client) -> None:
    response = client.get("/metrics", headers={"x-admin-key": "nope"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


def test_metrics_with_the_read_or_admin_key_is_200(client: Client) -> None:
    scrape(client, READ)
    scrape(client, WRITE)


def test_metrics_accepts_the_key_as_a_bearer_token_as_prometheus_sends_it(client: Client) -> None:
    assert client.get("/metrics", headers={"Authorization": f"Bearer {READ['x-admin-key']}"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Basic {READ['x-admin-key']}"}).status_code == 401


def test_metrics_public_needs_no_key(client: Client, settings: Any) -> None:
    settings.AMY_METRICS_PUBLIC = True
    families = scrape(client, headers=None)
    assert "amy_raw_events" in families


# The text ----------------------------------------------------------------------------------------


def test_the_output_parses_as_prometheus_text(client: Client) -> None:
    families = scrape(client)
    for name in ("amy_webhook_requests", "amy_normalize", "amy_normalize_duration_seconds", "amy_http_requests"):
        assert name in families, name


def test_a_webhook_post_moves_the_accepted_counter(client: Client, post_webhook: PostWebhook) -> None:
    before = sample_value(scrape(client), "amy_webhook_requests", "amy_webhook_requests_total", outcome="accepted")
    assert post_webhook(sample("sleep")).status_code == 200
    after = sample_value(scrape(client), "amy_webhook_requests", "amy_webhook_requests_total", outcome="accepted")
    assert after == before + 1


def test_a_duplicate_and_a_bad_signature_are_counted_by_outcome(client: Client, post_webhook: PostWebhook) -> None:
    def counts() -> tuple[float, float]:
        families = scrape(client)
        return (
            sample_value(families, "amy_webhook_requests", "amy_webhook_requests_total", outcome="duplicate"),
            sample_value(families, "amy_webhook_requests", "amy_webhook_requests_total", outcome="invalid_signature"),
        )

    duplicates, bad = counts()
    body = sample("daily")
    post_webhook(body)
    post_webhook(body)
    assert post_webhook(body, headers={"terra-signature": "t=1,v1=00"}).status_code == 401
    assert counts() == (duplicates + 1, bad + 1)


def test_the_ledger_gauges_show_waiting_and_failed_rows_and_the_oldest_waiting_age(client: Client) -> None:
    waiting = store(body_of({"type": "daily", "user": {"user_id": "tu-metrics"}, "data": [], "n": 1}))
    RawEvent.objects.filter(pk=waiting.pk).update(queued_at=timezone.now() - timedelta(minutes=10))
    dead(n=2)
    families = scrape(client)
    states = {s.labels["state"]: s.value for s in families["amy_raw_events"].samples}
    assert set(states) == {"received", "processing", "parked", "dead"}
    assert (states["received"], states["dead"]) == (1, 1)
    assert 9 * 60 < sample_value(families, "amy_backlog_oldest_age_seconds") < 20 * 60
    assert sample_value(families, "amy_drain_window_seconds") == settings.AMY_DRAIN_WINDOW_SECONDS


def test_the_ledger_gauges_never_count_the_whole_ledger(client: Client) -> None:
    with CaptureQueriesContext(connection) as queries:
        scrape(client)
    ledger = [q["sql"] for q in queries.captured_queries if "raw_events" in q["sql"]]
    assert ledger
    for sql in ledger:
        assert "GROUP BY" not in sql.upper()
        counts = re.findall(r"count\(\*\) FROM raw_events( WHERE state)?", sql)
        assert counts, sql
        assert all(counts), sql  # each count reads one state's partial index


def test_a_task_run_is_counted_with_its_last_success_time(client: Client) -> None:
    from ingest.tasks import drain_stuck_events

    labels = {"task": "ingest.drain_stuck_events", "outcome": "success"}
    before = sample_value(scrape(client), "amy_celery_tasks", "amy_celery_tasks_total", **labels)
    started = time.time()
    drain_stuck_events.apply()
    families = scrape(client)
    assert sample_value(families, "amy_celery_tasks", "amy_celery_tasks_total", **labels) == before + 1
    stamp = sample_value(families, "amy_celery_task_last_success_timestamp_seconds", task="ingest.drain_stuck_events")
    assert stamp >= started


def test_the_oldest_waiting_age_is_zero_when_nothing_waits(client: Client) -> None:
    assert sample_value(scrape(client), "amy_backlog_oldest_age_seconds") == 0


def test_queue_depths_are_gauges_when_redis_answers(client: Client, redis_client: Any) -> None:
    families = scrape(client)
    assert sample_value(families, "amy_queue_depth") >= 0
    assert "amy_dlq_depth" in families


def test_queue_depths_are_left_out_when_redis_is_down(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("admin_ops.services.queue_depths", lambda: (None, None))
    families = scrape(client)
    assert "amy_queue_depth" not in families
    assert "amy_dlq_depth" not in families
    assert "amy_raw_events" in families


def test_normalize_outcome_and_latency_are_counted_by_event_type(client: Client) -> None:
    families = scrape(client)
    before = sample_value(families, "amy_normalize", "amy_normalize_total", event_type="daily", outcome="parked")
    observed = sample_value(
        families, "amy_normalize_duration_seconds", "amy_normalize_duration_seconds_count", event_type="daily"
    )
    raw_event = deliver(sample("daily"))
    assert raw_event.state == RawEventState.PARKED  # no connection for the Terra user
    families = scrape(client)
    assert (
        sample_value(families, "amy_normalize", "amy_normalize_total", event_type="daily", outcome="parked")
        == before + 1
    )
    assert (
        sample_value(
            families, "amy_normalize_duration_seconds", "amy_normalize_duration_seconds_count", event_type="daily"
        )
        == observed + 1
    )


def test_the_middleware_counts_requests_by_route_pattern() -> None:
    request = RequestFactory().get("/metrics")

    def view(req: HttpRequest) -> HttpResponse:
        req.resolver_match = type("Match", (), {"route": "admin/raw-events/<int:raw_event_id>"})()  # type: ignore[attr-defined]
        return HttpResponse(status=204)

    labels = {"route": "/admin/raw-events/<int:raw_event_id>", "method": "GET", "status": "204"}
    before = metrics.HTTP_REQUESTS.labels(**labels)._value.get()
    MetricsMiddleware(view)(request)
    assert metrics.HTTP_REQUESTS.labels(**labels)._value.get() == before + 1


# Labels from known sets only -----------------------------------------------------------------------


def _series_count(families: dict[str, Any]) -> int:
    return sum(len(family.samples) for family in families.values())


def test_made_up_event_types_are_labelled_other_and_add_no_series(client: Client) -> None:
    # given: one made-up type seen already (its `other` series exist)
    deliver(body_of({"type": "made-up-0", "user": {"user_id": "tu-labels"}, "n": 0}))
    before = scrape(client)
    # when: 20 more made-up types are processed
    for n in range(1, 21):
        raw_event = deliver(body_of({"type": f"made-up-{n}", "user": {"user_id": "tu-labels"}, "n": n}))
        assert raw_event.state == RawEventState.SKIPPED
    after = scrape(client)
    # then: the scrape has exactly as many series, and no label names a made-up type
    assert _series_count(after) == _series_count(before)
    labels = {value for family in after.values() for s in family.samples for value in s.labels.values()}
    assert not {value for value in labels if value.startswith("made-up")}
    assert (
        sample_value(after, "amy_normalize", "amy_normalize_total", event_type="other", outcome="skipped")
        == sample_value(before, "amy_normalize", "amy_normalize_total", event_type="other", outcome="skipped") + 20
    )


def test_a_known_event_type_keeps_its_own_label() -> None:
    assert metrics.event_type_label("daily") == "daily"
    assert metrics.event_type_label("healthcheck") == "healthcheck"
    assert metrics.event_type_label("") == "unknown"
    assert metrics.event_type_label("made-up") == "other"


def test_made_up_http_methods_are_labelled_other_and_add_no_series(client: Client) -> None:
    client.generic("MADEUP0", "/metrics", headers=READ)
    scrape(client)
    before = _series_count(scrape(client))
    for n in range(1, 21):
        client.generic(f"MADEUP{n}", "/metrics", headers=READ)
    after = scrape(client)
    methods = {s.labels.get("method") for s in after["amy_http_requests"].samples}
    assert "OTHER" in methods
    assert not {m for m in methods if m and m.startswith("MADEUP")}
    assert _series_count(after) == before


def test_a_worker_whose_metrics_port_is_taken_works_on_without_serving(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    from admin_ops.metrics import serve_worker_metrics

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings.AMY_WORKER_METRICS_PORT = taken.getsockname()[1]
        settings.AMY_WORKER_METRICS_ADDR = "127.0.0.1"
        serve_worker_metrics()
    assert "worker metrics not served" in caplog.text


def test_a_worker_without_a_metrics_port_serves_nothing(settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    from admin_ops.metrics import serve_worker_metrics

    settings.AMY_WORKER_METRICS_PORT = 0
    serve_worker_metrics()
    assert "worker metrics" not in caplog.text
