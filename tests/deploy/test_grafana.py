"""Grafana cannot be pulled here, so its provisioning is checked instead: the YAML
Grafana reads at start, the dashboard JSON's structure, and every panel's PromQL,
both against the metric names the service really exposes and by running it on a
real Prometheus that scraped the service."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.config import Settings
from tests.deploy.prometheus_server import MonitoredService

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "mnist-serve.json"
COMPOSE = ROOT / "docker-compose.yml"
# Grafana's variables, replaced by what they become for a query over every replica.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "5m", "$instance": ".*"}
METRIC = re.compile(r"\b(mnist_[a-z0-9_]+)\b")
QUANTILE = re.compile(
    r"histogram_quantile\(\s*(?P<q>[0-9.]+)\s*,\s*sum by \((?P<by>[^)]*)\)\s*"
    r"\(rate\((?P<metric>[a-z0-9_]+)\{"
)
SUFFIXES = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


@pytest.fixture(scope="module")
def exposed_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every sample name a live app's /metrics can carry, from its HELP/TYPE lines
    (labelled series appear only once used; their families are always declared)."""
    mp = pytest.MonkeyPatch()
    mp.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    try:
        with TestClient(create_app(Settings(model_repository=ROOT / "models"))) as client:
            text = client.get("/metrics").text
    finally:
        mp.undo()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def substitute(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown variable in {expr}"
    return expr


def test_datasource_provisioning_points_at_the_compose_prometheus() -> None:
    config = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    assert config["apiVersion"] == 1
    [source] = config["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == "prometheus"
    assert source["access"] == "proxy"
    assert source["isDefault"] is True
    compose = load_yaml(COMPOSE)
    assert "prometheus" in compose["services"]
    assert source["url"] == "http://prometheus:9090"


def test_dashboard_provider_reads_the_mounted_folder() -> None:
    config = load_yaml(GRAFANA / "provisioning" / "dashboards" / "mnist-serve.yml")
    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert provider["type"] == "file"
    grafana = load_yaml(COMPOSE)["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
    assert all(port.startswith("127.0.0.1:") for port in grafana["ports"])


def test_dashboard_structure(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "mnist-serve"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["title"] and panel["type"] in {"timeseries", "stat", "heatmap", "bargauge"}
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids))
        assert all(target["expr"].strip() for target in panel["targets"])
    [variable] = dashboard["templating"]["list"]
    assert variable["name"] == "instance" and variable["datasource"]["uid"] == "prometheus"


def test_panels_use_only_metrics_the_service_exposes(
    dashboard: dict[str, Any], exposed_names: set[str]
) -> None:
    used = set()
    for title, expr in expressions(dashboard):
        names = set(METRIC.findall(expr))
        assert names or "up{" in expr, f"{title}: no metric in {expr}"
        unknown = names - exposed_names
        assert not unknown, f"{title}: {sorted(unknown)} not exposed by the service"
        used |= names
    # Every metric the issue asks the dashboard to show is on it.
    assert {
        "mnist_http_requests_total",
        "mnist_http_request_duration_seconds_bucket",
        "mnist_batch_size_rows_bucket",
        "mnist_queue_depth_rows",
        "mnist_rejections_total",
        "mnist_predictions_total",
        "mnist_http_requests_in_flight",
    } <= used


def test_percentiles_come_from_histogram_buckets(dashboard: dict[str, Any]) -> None:
    latency_quantiles = set()
    for title, expr in expressions(dashboard):
        if "histogram_quantile" in expr:
            match = QUANTILE.search(expr)
            assert match, f"{title}: histogram_quantile must wrap sum by (le) (rate(..._bucket))"
            assert match["metric"].endswith("_bucket"), title
            assert "le" in [label.strip() for label in match["by"].split(",")], title
            if match["metric"] == "mnist_http_request_duration_seconds_bucket":
                latency_quantiles.add(float(match["q"]))
        for bucket in re.findall(r"(\w+)_bucket", expr):
            assert re.search(rf"(rate|increase)\({bucket}_bucket", expr), f"{title}: raw buckets"
    assert {0.5, 0.95, 0.99} <= latency_quantiles


def test_panels_by_label(dashboard: dict[str, Any]) -> None:
    exprs = {title: expr for title, expr in expressions(dashboard)}
    assert "by (protocol, status)" in exprs["Request rate by protocol and status"]
    assert "by (reason)" in exprs["Rejections by reason"]
    assert "by (digit)" in exprs["Predictions per digit"]


@pytest.mark.slow
def test_every_panel_query_runs_on_real_prometheus(
    dashboard: dict[str, Any], monitored_service: MonitoredService
) -> None:
    prometheus = monitored_service.prometheus
    # The dashboard's job label is the compose/ServiceMonitor one; the test's job matches it.
    for title, expr in expressions(dashboard):
        result = prometheus.query(substitute(expr))
        assert result, f"{title}: no data for {substitute(expr)}"
    variable = dashboard["templating"]["list"][0]["query"]["query"]
    assert variable.startswith('label_values(up{job="mnist-serve"}')
