"""docker-compose.yml as written (Docker does not run here: the file is read, as compose would):
development by name, ports on loopback only, every image pinned, the lab bucket created on first
start, per-container metrics, workers that scale, one beat, the observability profile."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("migrate", "web", "worker", "beat")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_the_stack_names_development_explicitly(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        assert services[name]["environment"]["ENVIRONMENT"] == "development", name


def test_every_published_port_is_bound_to_loopback(services: dict[str, Any]) -> None:
    published = [(name, port) for name, service in services.items() for port in service.get("ports", [])]
    assert published
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), (name, port)


def test_every_image_is_pinned_by_version(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert tag != "latest"
        assert re.search(r"\d+\.\d+|RELEASE\.\d{4}-\d{2}-\d{2}", tag), f"{name}: {image} is not a version"


def test_the_lab_bucket_is_created_before_the_app_starts(services: dict[str, Any]) -> None:
    bucket = services["s3-bucket"]
    assert bucket["command"][-1] == "local/amy-lab-reports"
    assert "--ignore-existing" in bucket["command"]
    assert bucket["depends_on"]["s3"]["condition"] == "service_healthy"
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["s3-bucket"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["AMY_LAB_BUCKET"] == "amy-lab-reports"


def test_each_container_keeps_its_own_metrics_directory(services: dict[str, Any]) -> None:
    for name in ("web", "worker"):
        directory = services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
        assert any(mount.split(":")[0] == directory for mount in services[name]["tmpfs"]), name
        assert not any(directory in str(volume) for volume in services[name].get("volumes", [])), name
    assert services["worker"]["environment"]["AMY_WORKER_METRICS_PORT"] == "9808"


def test_workers_scale_and_beat_stays_one(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "-n" not in worker["command"]  # each replica's node name is its own hostname
    beats = [name for name, service in services.items() if "beat" in service.get("command", [])]
    assert beats == ["beat"]
    assert "deploy" not in services["beat"]


def test_the_observability_profile_runs_prometheus_with_the_rules_and_grafana_with_the_dashboard(
    services: dict[str, Any],
) -> None:
    observability = {name for name, service in services.items() if "observability" in service.get("profiles", [])}
    assert observability == {"prometheus", "grafana"}
    for name in observability:
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    mounts = " ".join(services["prometheus"]["volumes"] + services["grafana"]["volumes"])
    assert "deploy/prometheus/alerts.yml" in mounts
    assert "deploy/grafana/dashboards" in mounts
    assert "deploy/grafana/provisioning" in mounts
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["amy-worker"]["dns_sd_configs"][0]["names"] == ["worker"]
    assert jobs["amy-worker"]["dns_sd_configs"][0]["port"] == 9808
    assert jobs["amy-web"]["dns_sd_configs"][0]["names"] == ["web"]
