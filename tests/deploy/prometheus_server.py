"""Run a real Prometheus server (Debian package `prometheus`) for tests, on a free
127.0.0.1 port with a generated config and a throw-away storage folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from evaluation.live_server import LiveServer, free_port

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
STARTUP_TIMEOUT_S = 20.0
JOB = "mnist-serve"  # the job name the compose config, the ServiceMonitor and the dashboard use


def require_binary(name: str) -> str:
    """The path of a Prometheus tool; in CI its absence is a failure, elsewhere a skip."""
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` not found: apt-get install prometheus"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def poll(what: str, check: Callable[[], T | None], timeout_s: float) -> T:
    """Call `check` until it returns something truthy; bounded, for external processes."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (httpx.TransportError, KeyError, IndexError) as error:
            last_error, result = error, None
        if result:
            return result
        time.sleep(0.2)  # an external process is being polled; the deadline bounds it
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} ({last_error!r})")


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        body = response.json()
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.api("query", query=promql)
        result: list[dict[str, Any]] = data["result"]
        return result

    def scalar(self, promql: str) -> float | None:
        """The value of a query with one result, or None when it has no data."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def targets(self, job: str) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return [target for target in active if target["labels"]["job"] == job]


def write_config(folder: Path, job: str, targets: list[str]) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
    }
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    subprocess.run(
        [require_binary("promtool"), "check", "config", str(path)],
        check=True,
        capture_output=True,
    )
    return path


@contextmanager
def prometheus_server(folder: Path, job: str, targets: list[str]) -> Iterator[Prometheus]:
    binary = require_binary("prometheus")
    folder.mkdir(parents=True, exist_ok=True)
    config = write_config(folder, job, targets)
    port = free_port()
    log_path = folder / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process, log_path)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{log_path.read_text()}")
            return httpx.get(f"{server.url}/-/ready", timeout=1).status_code == 200

        poll("prometheus to be ready", ready, STARTUP_TIMEOUT_S)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class MonitoredService:
    """A live service, a Prometheus that scraped it, and the traffic it was sent."""

    service: LiveServer
    prometheus: Prometheus
    predictions: int  # images classified, in total
    refused: int  # requests answered 4xx for bad input
