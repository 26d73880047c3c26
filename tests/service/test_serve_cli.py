"""`mnist-serve` as a person meets it: --help, --version, bad values, a wrong model
repository, a taken port, and the one human line once the service is ready."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluation.live_server import LiveServer, live_server
from service.cli import ServeOptions, default_text, flag, variable
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(120)


def run_serve(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MNIST_")}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=cwd,
        env={**environment, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_shows_plain_types_defaults_and_variables() -> None:
    result = run_serve("--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for internal in ("{int,null}", "SecretStr", "null", "default factory", "(default: "):
        assert internal not in text, internal
    for name in ServeOptions.model_fields:
        assert flag(name) in text, name
        assert f"[{variable(name)}; default: {default_text(name)}]" in text, name
    assert "--batching, --no-batching" in text
    assert "--port INT" in text and "--max-queue-delay-ms NUMBER" in text


def test_version() -> None:
    result = run_serve("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"mnist-serve \S+\n", result.stdout)


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--port", "70000"], {}, "--port / MNIST_PORT"),
        ([], {"MNIST_MAX_BATCH_SIZE": "0"}, "--max-batch-size / MNIST_MAX_BATCH_SIZE"),
        (["--uncertain-below", "2"], {}, "--uncertain-below / MNIST_UNCERTAIN_BELOW"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_flag_and_variable(
    args: list[str], env: dict[str, str], named: str
) -> None:
    result = run_serve(*args, env=env)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"mnist-serve: invalid setting: {named}: ")


def test_a_flag_wins_over_its_variable() -> None:
    result = run_serve("--port", "70000", env={"MNIST_PORT": "8000"})
    assert "--port / MNIST_PORT" in result.stderr  # the flag's value was the one checked


@pytest.mark.parametrize("kind", ["missing", "empty", "other-model"])
def test_a_repository_without_the_model_says_which_flag_fixes_it(tmp_path: Path, kind: str) -> None:
    repository = tmp_path / "repo"
    if kind != "missing":
        repository.mkdir()
    if kind == "other-model":
        (repository / "fashion").mkdir()
    result = run_serve("--model-repository", str(repository), "--port", "0")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert str(repository) in line
    assert "--model-repository" in line and "MNIST_MODEL_REPOSITORY" in line
    if kind == "missing":
        assert "does not exist" in line
    else:
        assert "holds no versions of model 'mnist-mlp'" in line
    if kind == "other-model":
        assert "fashion" in line and "--model-name" in line
    assert result.stdout == ""


def test_without_a_repository_the_checkout_or_package_model_is_served(tmp_path: Path) -> None:
    """From a folder with no models/ and nothing configured, the packaged model is found
    (in a checkout: the checkout's models/; a wheel install is tested in tests/test_packaging)."""
    from service.config import Settings

    assert not (tmp_path / "models").exists()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from service.config import Settings; print(Settings().model_repository)",
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert Path(result.stdout.strip()) == ROOT / "models"
    assert Settings().model_repository == Path("models")  # the tests run from the checkout


def test_a_taken_port_fails_before_ready_naming_the_flag() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve("--port", str(port))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"127.0.0.1:{port}" in line and "--port" in line
    assert "ready" not in result.stdout


def ready_lines(server: LiveServer) -> list[str]:
    """The stdout lines once the ready line is there (printed after /readyz answered 200,
    by a watcher polling every 50 ms): poll the output file, bounded in time."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = server.stdout().splitlines()
        if lines:
            return lines
        time.sleep(0.02)  # polling an external process's output, bounded above
    return []


@pytest.mark.parametrize("workers", ["1", "2"])
def test_one_human_ready_line_with_the_urls(tmp_path: Path, workers: str) -> None:
    with live_server(tmp_path, "--workers", workers) as server:
        url = server.url
        lines = ready_lines(server)
        server.terminate()  # (its exit code is the drain tests' business)
    assert lines == server.stdout().splitlines()  # nothing more came, from any worker
    assert len(lines) == 1, lines
    assert re.fullmatch(
        rf"mnist-serve \S+ ready: page {url}/ · API docs {url}/docs · metrics {url}/metrics"
        r" \(Ctrl\+C stops it\)",
        lines[0],
    )
