"""The alert rules and the dashboard as shipped (deploy/): promtool checks and unit-tests the rules,
the dashboard is valid JSON whose every query names only metrics the service exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "amy-pipeline.json"
PROMTOOL = "/usr/bin/promtool"
METRIC = re.compile(r"\bamy_[a-z0-9_]+\b")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not Path(PROMTOOL).exists():
        pytest.fail(f"{PROMTOOL} is needed: ./scripts/test installs it (apt-get install prometheus)")
    return subprocess.run([PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def metric_names(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in METRIC.findall(expr)}


def test_promtool_accepts_the_rules() -> None:
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_unit_tests_pass_under_promtool() -> None:
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert set(rule_expressions()) == tested


def test_the_alerts_cover_what_should_page() -> None:
    names = metric_names(list(rule_expressions().values()))
    assert {
        "amy_raw_events",  # dead letters growing
        "amy_backlog_oldest_age_seconds",  # the oldest waiting event
        "amy_drain_window_seconds",
        "amy_http_requests_total",  # webhook 5xx and 401
        "amy_normalize_total",  # no worker consuming
        "amy_celery_task_last_success_timestamp_seconds",  # the drain not running
    } <= names


def test_the_dashboard_is_grafana_json_on_the_provisioned_data_source() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "amy-pipeline"
    assert dashboard["panels"]
    sources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {source["uid"] for source in sources["datasources"]}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids
        assert panel["targets"], panel["title"]


def test_the_dashboard_shows_what_the_alerts_watch() -> None:
    assert metric_names(list(rule_expressions().values())) <= metric_names(dashboard_expressions())
