"""A real Prometheus (Debian's package) scrapes the live stack as compose lays it out: gunicorn's
`/metrics` (its own processes and the ledger gauges, key as a bearer token) and a Celery worker's
own endpoint (its pool's counters, in its own metrics directory). The rules load and evaluate, and
every metric the rules and the dashboard name exists in what was scraped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from django.conf import settings

from accounts.models import User
from ingest.models import RawEvent, RawEventState, TerraConnection
from tests.conftest import database_url_for_tests
from tests.live import CeleryWorker, Gunicorn, free_port, running, service_env, wait_for
from tests.observability.test_rules import (
    DASHBOARD,
    PROMETHEUS,
    dashboard_expressions,
    metric_names,
    rule_expressions,
)
from tests.terra import body_of, sample, signed_headers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

PROMETHEUS_BIN = "/usr/bin/prometheus"
READ_KEY = "scrape-read-key"
GARMIN_TERRA_USER = "b3e4a6c1-52d9-4f8e-a7b0-6c9d1e2f3a45"  # the daily sample's Terra user
# Generous bounds for a loaded 2-core machine; they only stop a hung run, nothing is timed.
TIMEOUT = 120


@contextlib.contextmanager
def prometheus(config: dict[str, Any], workdir: Path) -> Iterator[str]:
    if not Path(PROMETHEUS_BIN).exists():
        pytest.fail(f"{PROMETHEUS_BIN} is needed: ./scripts/test installs it (apt-get install prometheus)")
    port = free_port()
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS_BIN,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, (workdir / "prometheus.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            return False

        wait_for(ready, TIMEOUT, "Prometheus to be ready", interval=0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        log.close()


def _api(url: str, path: str, **params: str) -> Any:
    response = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=10)
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def test_prometheus_scrapes_the_live_stack_and_every_metric_the_rules_and_dashboard_name_exists(
    tmp_path: Path,
) -> None:
    # given: a Terra user with a connection, so one body is processed and a malformed one dies
    user = User.objects.create(id="user_observed")
    TerraConnection.objects.create(user=user, terra_user_id=GARMIN_TERRA_USER, provider="GARMIN")
    # and web and worker as in compose: each its own metrics directory, the worker serving its own
    web_dir, worker_dir = tmp_path / "web-metrics", tmp_path / "worker-metrics"
    web_dir.mkdir()
    worker_dir.mkdir()
    worker_port = free_port()
    common = {"database_url": database_url_for_tests(), "redis_url": settings.REDIS_URL}
    web = Gunicorn(service_env(**common, PROMETHEUS_MULTIPROC_DIR=str(web_dir), AMY_ADMIN_READ_KEY=READ_KEY))
    worker = CeleryWorker(
        service_env(
            **common,
            PROMETHEUS_MULTIPROC_DIR=str(worker_dir),
            AMY_WORKER_METRICS_PORT=str(worker_port),
            AMY_WORKER_METRICS_ADDR="127.0.0.1",
        ),
        name="observed",
    )
    key_file = tmp_path / "metrics-key"
    key_file.write_text(READ_KEY)
    with running(web, worker):
        # when: webhooks flow (processed, dead-lettered, refused) and beat's drain runs once
        for body in (sample("daily"), body_of({"type": "daily", "user": {"user_id": GARMIN_TERRA_USER}, "data": 1})):
            response = httpx.post(f"{web.url}/webhooks/terra", content=body, headers=signed_headers(body), timeout=10)
            assert response.status_code == 200, response.text
        refused = httpx.post(
            f"{web.url}/webhooks/terra", content=b"{}", headers={"terra-signature": "t=1,v1=00"}, timeout=10
        )
        assert refused.status_code == 401
        wait_for(
            lambda: (
                set(RawEvent.objects.values_list("state", flat=True)) == {RawEventState.PROCESSED, RawEventState.DEAD}
            ),
            TIMEOUT,
            "the worker to process one event and dead-letter the other",
            interval=0.2,
        )
        from ingest.tasks import drain_stuck_events

        drain_stuck_events.delay()
        wait_for(
            lambda: "ingest.drain_stuck_events" in httpx.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=5).text,
            TIMEOUT,
            "the worker's endpoint to show the drain's run",
            interval=0.2,
        )

        # and: Prometheus scrapes both with the shipped rules
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROMETHEUS / "alerts.yml")],
            "scrape_configs": [
                {
                    "job_name": "amy-web",
                    "metrics_path": "/metrics",
                    "authorization": {"type": "Bearer", "credentials_file": str(key_file)},
                    "static_configs": [{"targets": [f"127.0.0.1:{web.port}"]}],
                },
                {"job_name": "amy-worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
            ],
        }
        workdir = Path(tempfile.mkdtemp(prefix="amy-prometheus-", dir=tmp_path))
        with prometheus(config, workdir) as url:
            # then: both targets are up
            def targets_up() -> bool:
                active = _api(url, "targets")["activeTargets"]
                return len(active) == 2 and all(t["health"] == "up" for t in active)

            wait_for(targets_up, TIMEOUT, "both scrape targets to be up", interval=0.5)

            # and every metric the rules and the dashboard name has been scraped
            wanted = metric_names(list(rule_expressions().values()) + dashboard_expressions())
            missing: set[str] = set()

            def all_present() -> bool:
                missing.clear()
                missing.update(wanted - set(_api(url, "label/__name__/values")))
                return not missing

            with contextlib.suppress(TimeoutError):
                wait_for(all_present, TIMEOUT, "every named metric to be scraped", interval=0.5)
            assert not missing, f"named in {PROMETHEUS / 'alerts.yml'} or {DASHBOARD} but not exported: {missing}"

            # and the worker's counters come from the worker's own endpoint, the ledger from the web
            assert _api(url, "query", query='amy_normalize_total{job="amy-worker"}')["result"]
            assert not _api(url, "query", query='amy_normalize_total{job="amy-web"}')["result"]
            assert (
                _api(url, "query", query='amy_raw_events{job="amy-web", state="dead"}')["result"][0]["value"][1] == "1"
            )

            # and every rule loaded and evaluates without error
            def rules_evaluated() -> bool:
                rules = [rule for group in _api(url, "rules")["groups"] for rule in group["rules"]]
                return {rule["name"] for rule in rules} == set(rule_expressions()) and all(
                    rule["health"] == "ok" for rule in rules
                )

            wait_for(rules_evaluated, TIMEOUT, "every rule to load and evaluate", interval=0.5)
            # and every dashboard query runs
            for expr in dashboard_expressions():
                _api(url, "query", query=expr)
