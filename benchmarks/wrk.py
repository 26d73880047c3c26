"""Run wrk (Debian's `wrk`) pinned to one core and parse the JSON line our Lua script prints."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil

LUA = Path(__file__).with_name("wrk_bodies.lua")
STATUS_LUA = Path(__file__).with_name("wrk_status.lua")  # the same, plus answers by status
WRK = shutil.which("wrk") or "/usr/bin/wrk"


@dataclass(frozen=True)
class WrkResult:
    connections: int
    seconds: float
    requests: int
    ok: int  # 2xx/3xx answers
    errors: int  # socket errors + non-2xx answers
    non2xx: int  # answers with a 4xx/5xx status (e.g. 429 when the queue is full)
    timeouts: int  # requests unanswered within the wrk timeout
    rps: float  # successful requests per second
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    server_cpu_s: float = 0.0  # CPU time the server processes used during the run
    statuses: dict[str, int] = field(default_factory=dict)  # answers by status (wrk_status.lua)
    socket_errors: int = 0  # connect + read + write errors: clients that got no answer

    @property
    def per_cpu_s(self) -> float:
        """Successful requests per second of server CPU: the rate one dedicated core
        would sustain, robust to other jobs stealing the core (a shared machine)."""
        return self.ok / self.server_cpu_s if self.server_cpu_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_cpu_s": round(self.per_cpu_s, 1)}


def run_wrk(
    url: str,
    *,
    server_pid: int | None = None,
    connections: int,
    seconds: float,
    body_dir: Path | None = None,
    api_key: str = "",
    cpus: str | None = "0",
    timeout_s: float = 10.0,
    script: Path = LUA,
) -> WrkResult:
    """One wrk run: 1 thread (it shares one core), `connections` keep-alive connections.

    `script`: `wrk_status.lua` also counts the answers by status."""
    command = [
        WRK,
        "-t1",
        f"-c{connections}",
        f"-d{max(round(seconds), 1)}s",
        f"--timeout={max(round(timeout_s), 1)}s",
        "-s",
        str(script),
        url,
        "--",
        str(body_dir or ""),
        api_key,
    ]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    cpu_before = process_tree_cpu_s(server_pid)
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=True
    )
    cpu_used = process_tree_cpu_s(server_pid) - cpu_before
    line = next((line for line in done.stdout.splitlines() if line.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    data = orjson.loads(line.removeprefix("WRK_JSON "))
    errors = data["errors"]
    failed = errors["status"] + errors["connect"] + errors["read"] + errors["write"]
    socket_errors = errors["connect"] + errors["read"] + errors["write"]
    failed += errors["timeout"]
    counted = next((x for x in done.stdout.splitlines() if x.startswith("WRK_STATUSES ")), None)
    statuses = orjson.loads(counted.removeprefix("WRK_STATUSES ")) if counted else {}
    duration = data["duration_us"] / 1e6
    ok = max(data["requests"] - errors["status"], 0)
    latency = data["latency_us"]
    return WrkResult(
        connections=connections,
        seconds=duration,
        requests=data["requests"],
        ok=ok,
        errors=failed,
        non2xx=errors["status"],
        timeouts=errors["timeout"],
        rps=ok / duration if duration else 0.0,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p95_ms=latency["p95"] / 1000,
        p99_ms=latency["p99"] / 1000,
        mean_ms=latency["mean"] / 1000,
        server_cpu_s=round(cpu_used, 3),
        statuses=statuses,
        socket_errors=socket_errors,
    )


def process_tree_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process and its live descendants (0 without a pid)."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
        return total
    except psutil.NoSuchProcess:
        return 0.0
