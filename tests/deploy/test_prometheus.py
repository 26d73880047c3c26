"""A real Prometheus (Debian package) scrapes a real service and answers PromQL."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from tests.deploy.prometheus_server import JOB, MonitoredService, poll, require_binary

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_target_is_up_and_scraped(monitored_service: MonitoredService) -> None:
    targets = monitored_service.prometheus.targets(JOB)
    assert len(targets) == 1
    assert targets[0]["health"] == "up", targets[0]["lastError"]
    assert monitored_service.prometheus.scalar(f'up{{job="{JOB}"}}') == 1


def test_predictions_total_matches_what_was_sent(monitored_service: MonitoredService) -> None:
    prometheus = monitored_service.prometheus
    assert prometheus.scalar("sum(mnist_predictions_total)") == monitored_service.predictions
    assert prometheus.scalar('sum(mnist_rejections_total{reason="invalid_image"})') == (
        monitored_service.refused
    )
    by_route = {
        r["metric"]["route"]: float(r["value"][1])
        for r in prometheus.query('sum by (route) (mnist_http_requests_total{status="200"})')
    }
    assert by_route == {"/v1/predict": 20, "/v2/models/{name}/infer": 2}


@pytest.mark.parametrize("quantile", [0.5, 0.95, 0.99])
def test_latency_quantiles_from_the_histogram(
    monitored_service: MonitoredService, quantile: float
) -> None:
    seconds = monitored_service.prometheus.scalar(
        f"histogram_quantile({quantile}, "
        "sum by (le) (rate(mnist_http_request_duration_seconds_bucket[1m])))"
    )
    assert seconds is not None and math.isfinite(seconds)
    assert 0 < seconds < 10, "the largest finite bucket is 10 s"


def test_batch_size_and_queue_wait_are_queryable(monitored_service: MonitoredService) -> None:
    prometheus = monitored_service.prometheus
    # Each round: single-image calls of 1 row, one batch call of as many rows as singles.
    mean_rows = prometheus.scalar(
        "sum(rate(mnist_batch_size_rows_sum[1m])) / sum(rate(mnist_batch_size_rows_count[1m]))"
    )
    assert mean_rows is not None and mean_rows > 1
    wait = prometheus.scalar(
        "histogram_quantile(0.99, sum by (le) (rate(mnist_queue_wait_seconds_bucket[1m])))"
    )
    assert wait is not None and math.isfinite(wait)
    info = prometheus.query("mnist_model_info")
    assert [r["metric"]["name"] for r in info] == ["mnist-mlp"]


def test_compose_config_and_rules_are_valid() -> None:
    promtool = require_binary("promtool")
    for args in (["check", "config"], ["check", "rules"]):
        name = "prometheus.yml" if args[1] == "config" else "rules.yml"
        result = subprocess.run(
            [promtool, *args, str(ROOT / "deploy" / "prometheus" / name)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_recording_and_alerting_rules_evaluate(monitored_service: MonitoredService) -> None:
    prometheus = monitored_service.prometheus

    def evaluated() -> list[dict[str, object]] | None:
        groups = prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        done = all(rule.get("lastEvaluation", "").startswith("20") for rule in rules)
        return rules if rules and done else None

    rules = poll("every rule to be evaluated once", evaluated, 10)
    assert {rule["health"] for rule in rules} == {"ok"}, rules
    p99 = poll(
        "the p99 recording rule to have a value",
        lambda: prometheus.scalar("mnist:http_request_duration_seconds:p99_1m"),
        10,
    )
    assert math.isfinite(p99)
