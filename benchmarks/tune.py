"""Tuning matrix: the same load points against one server configuration after another.

    python -m benchmarks.tune [--seconds 2] [--reps 3] [--only NAME,...]

One factor at a time from the shipped defaults: access log, max queue delay,
max batch size, and, on both cores, workers and ORT
intra-op threads. One-worker configurations run pinned like `benchmarks.run`
(server core 1, wrk core 0). The 2-core group pins nothing: server and wrk
share both cores, so its rows compare only with each other. Rounds interleave
the configurations (all servers stay up; an idle one costs nothing), and the
median of `--reps` is quoted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.bodies import write_bodies
from benchmarks.report import save_results
from benchmarks.run import CLIENT_CPU, SERVER_CPU, V2_PATH, machine
from benchmarks.server import ROOT, Server, start_server, stop_servers_on_sigterm
from benchmarks.wrk import WrkResult, run_wrk

QUIET = ["--no-access-log"]
BOTH = "0,1"


@dataclass(frozen=True)
class Config:
    name: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] | None = None
    cpus: str = SERVER_CPU
    client_cpus: str = CLIENT_CPU
    note: str = ""
    cwd: str | None = None  # a scratch copy holding a candidate change


CONFIGS = (
    Config("shipped defaults", (), note="access log on, delay 0 ms, batch 64, 1 thread"),
    Config("no access log", tuple(QUIET)),
    Config("delay 1 ms", (*QUIET, "--max-queue-delay-ms", "1")),
    Config("delay 0.5 ms", (*QUIET, "--max-queue-delay-ms", "0.5")),
    Config("delay 2 ms", (*QUIET, "--max-queue-delay-ms", "2")),
    Config("delay 5 ms", (*QUIET, "--max-queue-delay-ms", "5")),
    Config("delay 0, batch 16", (*QUIET, "--max-queue-delay-ms", "0", "--max-batch-size", "16")),
    Config("delay 0, batch 128", (*QUIET, "--max-queue-delay-ms", "0", "--max-batch-size", "128")),
    Config("delay 1, batch 16", (*QUIET, "--max-batch-size", "16")),
    Config("delay 1, batch 128", (*QUIET, "--max-batch-size", "128")),
    Config("int8 model, delay 0", (*QUIET, "--model-variant", "int8", "--max-queue-delay-ms", "0")),
    Config("2 cores: 1 worker, 1 thread", tuple(QUIET), cpus=BOTH, client_cpus=BOTH),
    Config(
        "2 cores: 1 worker, 2 threads",
        (*QUIET, "--ort-intra-op-threads", "2"),
        cpus=BOTH,
        client_cpus=BOTH,
    ),
    Config("2 cores: 2 workers, 1 thread", (*QUIET, "--workers", "2"), cpus=BOTH, client_cpus=BOTH),
    Config(
        "2 cores: 2 workers, delay 0",
        (*QUIET, "--workers", "2", "--max-queue-delay-ms", "0"),
        cpus=BOTH,
        client_cpus=BOTH,
    ),
)

# (label, body set, path, connections, images per request)
POINTS = (
    ("png c=1", "png", "/v1/predict", 1, 1),
    ("png c=32", "png", "/v1/predict", 32, 1),
    ("png c=128", "png", "/v1/predict", 128, 1),
    ("pixels c=32", "pixels", "/v1/predict", 32, 1),
    ("v2 64×uint8 c=8", "batch-v2-uint8", V2_PATH, 8, 64),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default="", help="Config names separated by ';'")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default="tune")
    parser.add_argument(
        "--candidate",
        type=Path,
        help="A scratch copy of the repo with a candidate service change: each selected "
        "config also runs from there ('candidate: NAME'), with --candidate-env added",
    )
    parser.add_argument(
        "--candidate-env", default="", help="KEY=VALUE,... for the candidate servers"
    )
    options = parser.parse_args(argv)
    stop_servers_on_sigterm()
    wanted = {name.strip() for name in options.only.split(";")} if options.only else None
    configs = [c for c in CONFIGS if wanted is None or c.name in wanted]
    if options.candidate is not None:
        pairs = [pair.partition("=") for pair in options.candidate_env.split(",") if "=" in pair]
        extra = tuple((key, value) for key, _, value in pairs)
        configs += [
            replace(c, name=f"candidate: {c.name}", cwd=str(options.candidate), env=c.env + extra)
            for c in configs
        ]
    started = time.monotonic()
    runs: dict[str, dict[str, list[WrkResult]]] = {
        c.name: {p[0]: [] for p in POINTS} for c in configs
    }
    ready: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mnist-tune-") as scratch:
        bodies = write_bodies(Path(scratch) / "bodies")
        servers: dict[str, Server] = {}
        try:
            for config in configs:
                servers[config.name] = start_server(
                    config.name.replace(" ", "_").replace(":", "").replace(",", ""),
                    config.args,
                    cpus=config.cpus,
                    env=dict(config.env),
                    command=config.command,
                    log_dir=Path(scratch) / "logs",
                    cwd=Path(config.cwd) if config.cwd else None,
                )
                ready[config.name] = round(servers[config.name].ready_s, 3)
            for rep in range(options.reps):
                for config in configs:
                    server = servers[config.name]
                    for label, body, path, connections, _ in POINTS:
                        result = run_wrk(
                            server.url + path,
                            connections=connections,
                            seconds=options.seconds,
                            body_dir=bodies[body].folder,
                            cpus=config.client_cpus,
                            server_pid=server.process.pid,
                        )
                        runs[config.name][label].append(result)
                    print(
                        f"[{time.monotonic() - started:6.0f}s] rep {rep + 1} {config.name}: "
                        + ", ".join(
                            f"{label} {runs[config.name][label][-1].rps:.0f}/s "
                            f"({runs[config.name][label][-1].per_cpu_s:.0f}/CPU-s)"
                            for label, *_ in POINTS
                        ),
                        flush=True,
                    )
            rss = {name: server.rss_mb() for name, server in servers.items()}
        finally:
            for server in servers.values():
                server.stop()

    table: dict[str, Any] = {}
    for config in configs:
        table[config.name] = {
            "args": list(config.command or config.args),
            "cpus": config.cpus,
            "ready_s": ready[config.name],
            "rss_after_load_mb": rss[config.name],
            "points": {},
        }
        for label, *_rest, images in POINTS:
            results = runs[config.name][label]
            table[config.name]["points"][label] = {
                "rps": round(statistics.median(r.rps for r in results), 1),
                "images_per_s": round(statistics.median(r.rps for r in results) * images, 1),
                "per_cpu_s": round(statistics.median(r.per_cpu_s for r in results), 1),
                "images_per_cpu_s": round(
                    statistics.median(r.per_cpu_s for r in results) * images, 1
                ),
                "p50_ms": round(statistics.median(r.p50_ms for r in results), 3),
                "p99_ms": round(statistics.median(r.p99_ms for r in results), 3),
                "errors": sum(r.errors for r in results),
            }
    summary = {
        "machine": machine(),
        "seconds": options.seconds,
        "reps": options.reps,
        "configs": table,
    }
    save_results(options.out, options.name, summary, render(summary))


def render(result: dict[str, Any]) -> str:
    labels = [p[0] for p in POINTS]
    lines = [
        f"Tuning matrix ({result['machine']['date']}, commit {result['machine']['git_commit']}, "
        f"{result['seconds']:g} s × {result['reps']} reps, median; load average before "
        f"{result['machine']['load_average']}). Cells: req/s (images/s for v2) on the wall clock, "
        "then per server CPU-second [in brackets], then p50 / p99 ms.",
        "",
        "| config | " + " | ".join(labels) + " | ready s | RSS MB |",
        "|---|" + "---:|" * (len(labels) + 2),
    ]
    for name, config in result["configs"].items():
        cells = []
        for label in labels:
            point = config["points"][label]
            v2 = "v2" in label
            rate = point["images_per_s"] if v2 else point["rps"]
            per_cpu = point.get("images_per_cpu_s" if v2 else "per_cpu_s", 0.0)
            errors = f" ({point['errors']} err)" if point["errors"] else ""
            cells.append(
                f"{rate:,.0f} [{per_cpu:,.0f}]<br>{point['p50_ms']:.2f} / {point['p99_ms']:.1f}"
                f"{errors}"
            )
        rss_text = "+".join(f"{mb:.0f}" for mb in config["rss_after_load_mb"])
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {config['ready_s']:.2f} | {rss_text} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
