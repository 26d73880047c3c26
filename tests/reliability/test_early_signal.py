"""A SIGTERM that arrives while the service is still starting drains it: exit 0.

With `--workers 2` the signal used to kill a worker that had not yet installed
its handlers (default action), and the supervisor then exited 1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from evaluation.live_server import ROOT, free_port

pytestmark = pytest.mark.slow


def start(tmp_path: Path, workers: int) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "server.log"
    env = {**os.environ, "MNIST_MODEL_REPOSITORY": str(ROOT / "models")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    argv = [sys.executable, "-m", "service", "--port", str(free_port()), "--grpc-port", "0"]
    with log.open("wb") as err:
        process = subprocess.Popen(
            [*argv, "--workers", str(workers)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return process, log


def wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    """Bounded polling of another process's log (nothing else tells us it got there)."""
    for _ in range(3000):
        if text in log.read_text(errors="replace") or process.poll() is not None:
            return
        time.sleep(0.01)
    raise AssertionError(f"{text!r} never logged")


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_while_the_first_worker_starts_exits_0(tmp_path: Path, workers: int) -> None:
    process, log = start(tmp_path, workers)
    try:
        # uvicorn logs this before the model is loaded; a second worker is still spawning.
        wait_for_line(log, "Started server process", process)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    text = log.read_text(errors="replace")
    assert code == 0, text[-3000:]
    started = text.count("Started server process")
    assert text.count('"drained"') == started >= 1, text[-3000:]


def test_workers_drain_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL (or the OOM killer) gives the supervisor no chance to forward anything:
    its workers notice they are orphaned, drain and exit instead of holding the port."""
    process, log = start(tmp_path, workers=2)
    try:
        for _ in range(3000):  # bounded polling of the log: both workers ready
            if log.read_text(errors="replace").count('"message":"ready"') >= 2:
                break
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.01)
        workers = psutil.Process(process.pid).children()
        assert len(workers) >= 2
        process.kill()
        process.wait(timeout=10)
        _, alive = psutil.wait_procs(workers, timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    for worker in alive:
        worker.kill()
    assert not alive, log.read_text(errors="replace")[-3000:]
    assert log.read_text(errors="replace").count("supervisor gone") == 2
