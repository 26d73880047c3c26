"""docker-compose.yml, the Dockerfile and .dockerignore, checked without a Docker
engine (scripts/docker-check.sh runs them for real): the pieces must agree with
each other and with the service's settings and endpoints."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.cli import ServeOptions

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return float(match[1])


def default(value: str) -> str:
    """`${NAME:-default}` -> default; a plain value unchanged."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", str(value))
    return match[1] if match else str(value)


def test_every_published_port_is_on_localhost(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"


def test_service_settings_and_replicas(compose: dict[str, Any]) -> None:
    mnist = compose["services"]["mnist"]
    assert mnist["image"].startswith("mnist-serve")
    assert default(mnist["deploy"]["replicas"]) == "1"
    assert "MNIST_REPLICAS" in mnist["deploy"]["replicas"]
    environment = mnist["environment"]
    known = {f"MNIST_{name.upper()}" for name in ServeOptions.model_fields}
    assert set(environment) <= known, sorted(set(environment) - known)
    assert "MNIST_WORKERS" in environment
    grace = float(default(environment["MNIST_SHUTDOWN_GRACE_S"]))
    delay = float(default(environment["MNIST_DRAIN_DELAY_S"]))
    assert seconds(mnist["stop_grace_period"]) >= max(grace, delay) + 3, "SIGKILL before drain"
    # Read-only container: /tmp is where multiprocess metrics live with MNIST_WORKERS > 1.
    assert mnist["read_only"] is True and "/tmp" in mnist["tmpfs"]


def test_prometheus_scrapes_every_replica_by_dns(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus")
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "mnist-serve"]
    [discovery] = job["dns_sd_configs"]
    assert discovery["names"] == ["mnist"] and "mnist" in compose["services"]
    assert discovery["type"] == "A"
    assert discovery["port"] == 8000 and "EXPOSE 8000 8001" in DOCKERFILE
    assert job["metrics_path"] == "/metrics"


def test_compose_file_is_valid_for_docker_compose(tmp_path: Path) -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (scripts/docker-check.sh installs it)")
    result = subprocess.run(
        [tool, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    stages = re.findall(r"^FROM (\S+) AS (\w+)", DOCKERFILE, flags=re.MULTILINE)
    assert [name for _, name in stages] == ["builder", "runtime"]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", DOCKERFILE, flags=re.MULTILINE)
    assert "COPY --from=builder /opt/venv /opt/venv" in DOCKERFILE
    assert "COPY models/ /app/models/" in DOCKERFILE
    runtime = DOCKERFILE.split(" AS runtime", 1)[1]
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.MULTILINE)
    # Base dependencies only: no extras (torch is in [train]).
    installs = re.findall(r"pip install[^\n]*", DOCKERFILE)
    assert installs and not any("[" in line for line in installs)
    instructions = [line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#")]
    mentions = [line for line in instructions if "torch" in line]
    assert mentions == [' && ! python3 -c "import torch" 2>/dev/null'], (
        "torch is only checked absent"
    )


def test_dockerfile_health_and_signals() -> None:
    healthcheck = re.search(r"^HEALTHCHECK .*\n\s+CMD (\[.*\])$", DOCKERFILE, flags=re.MULTILINE)
    assert healthcheck and "/readyz" in healthcheck[1] and "urllib" in healthcheck[1]
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE, flags=re.MULTILINE)
    assert cmd, "exec-form CMD, so mnist-serve is PID 1 and receives SIGTERM"
    assert yaml.safe_load(cmd[1]) == ["mnist-serve", "--host", "0.0.0.0", "--port", "8000"]
    assert "ENTRYPOINT" not in DOCKERFILE
    assert "ORT_DISABLE_TELEMETRY=1" in DOCKERFILE


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: nothing enters the context unless named"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    # setup.py (and MANIFEST.in) put the served model into the installed package.
    allowed_files = {"pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "service", "models"}
    assert allowed == allowed_files
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, flags=re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert source.rstrip("/") in allowed, f"COPY {source} is excluded by .dockerignore"
