"""Start mnist-serve for a benchmark: pinned to chosen cores, timed to readiness,
measured for memory, and scraped for its batch-size histogram."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from evaluation.live_server import free_port
from service.model import resolve_version_dir

ROOT = Path(__file__).resolve().parents[1]
# the newest version in the repository: what mnist-serve serves by default
SERVED_VERSION_DIR = resolve_version_dir(ROOT / "models", "mnist-mlp", None)
READY_TIMEOUT_S = 60.0
# (any labels besides `le`, e.g. the model version; one version is served in benchmarks)
_BUCKET = re.compile(
    r'^mnist_batch_size_rows_bucket\{(?:[^}]*,)?le="([^"]+)"[^}]*\} ([0-9.e+]+)$', re.M
)
_TOTALS = re.compile(r"^mnist_batch_size_rows_(sum|count)(?:\{[^}]*\})? ([0-9.e+]+)$", re.M)
SUM, COUNT = -1.0, -2.0  # keys of the histogram's _sum and _count in `batch_histogram`


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    ready_s: float
    log_path: Path
    rss_idle_mb: list[float] = field(default_factory=list)

    def rss_mb(self) -> list[float]:
        """Resident memory of each process serving requests (workers, not the supervisor)."""
        parent = psutil.Process(self.process.pid)
        children = parent.children(recursive=True)
        # uvicorn's workers are multiprocessing "spawn" children; the resource tracker is not
        procs = [c for c in children if "spawn_main" in " ".join(c.cmdline())] or [parent]
        return [round(p.memory_info().rss / 2**20, 1) for p in procs]

    def batch_histogram(self) -> dict[float, float]:
        """Cumulative `mnist_batch_size_rows_bucket` counts by upper bound (+ SUM, COUNT)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        histogram = {float(le): float(count) for le, count in _BUCKET.findall(text)}
        totals = dict(_TOTALS.findall(text))
        histogram[SUM] = float(totals.get("sum", 0.0))
        histogram[COUNT] = float(totals.get("count", 0.0))
        return histogram

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(
    name: str,
    args: Sequence[str] = (),
    *,
    cpus: str | None = "1",
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
    log_dir: Path,
    cwd: Path | None = None,
    ready_path: str = "/readyz",
) -> Server:
    """`python -m service --port P *args` (or `command` with {port}), pinned with taskset.

    `cwd`: run the `service` package found there (a scratch copy with a candidate
    change) instead of this checkout's."""
    port = free_port()
    environment = {**os.environ, "MNIST_MODEL_REPOSITORY": str(ROOT / "models"), **(env or {})}
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if command is None:
        # A free gRPC port too: several servers run side by side, never on the default 8001
        # (by variable: a revision from before gRPC ignores it, a flag would stop it).
        environment.setdefault("MNIST_GRPC_PORT", str(free_port()))
        argv = [sys.executable, "-m", "service", "--port", str(port), *args]
    else:
        argv = [part.format(port=port, python=sys.executable) for part in command]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log_file:
        started = time.perf_counter()
        process = subprocess.Popen(
            argv, cwd=cwd or ROOT, env=environment, stdout=log_file, stderr=subprocess.STDOUT
        )
    ready_s = _wait_ready(url + ready_path, process, log_path, started)
    server = Server(name, url, process, ready_s, log_path)
    server.rss_idle_mb = server.rss_mb()
    return server


def _wait_ready(probe: str, process: subprocess.Popen[bytes], log: Path, started: float) -> float:
    deadline = started + READY_TIMEOUT_S
    with httpx.Client(timeout=1.0) as client:
        while time.perf_counter() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited {process.returncode}:\n{log.read_text()}")
            try:
                if client.get(probe).status_code == 200:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            time.sleep(0.005)  # polling another process's readiness; bounds the error at 5 ms
    process.kill()
    raise RuntimeError(f"server not ready within {READY_TIMEOUT_S}s:\n{log.read_text()}")


def stop_servers_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks stop the servers we started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def histogram_delta(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """Per-bucket (not cumulative) batch counts between two scrapes: {"1": n, "2": n, ...},
    plus "rows" and "calls" (the histogram's _sum and _count) for the exact mean."""
    bounds = sorted(b for b in after if b >= 0)
    result = {
        "rows": after.get(SUM, 0.0) - before.get(SUM, 0.0),
        "calls": after.get(COUNT, 0.0) - before.get(COUNT, 0.0),
    }
    previous = 0.0
    for bound in bounds:
        cumulative = after[bound] - before.get(bound, 0.0)
        label = "inf" if bound == float("inf") else f"{bound:g}"
        result[label] = cumulative - previous
        previous = cumulative
    return result
