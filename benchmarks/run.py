"""The side-by-side benchmark of mnist-serve, in one command.

    python -m benchmarks.run --quick          # ~8 min: 2 s per point
    python -m benchmarks.run --full           # ~22 min: 8 s per point (--seconds N)
    python -m benchmarks.run --full --out benchmarks/results --plots docs/img

What runs, in one session so the ratios hold while absolute numbers drift:
  1. /healthz of the same server (the HTTP ceiling),
  2. single-image PNG POST /v1/predict, dynamic batching on,
  3. the same with `--no-batching` (one ORT call per request),
  4. /v1/predict/batch with 64 images per request (multipart PNG, JSON base64),
     and the raw-pixel path (v2 infer, UINT8 [64,28,28]), in images/s,
  5. raw onnxruntime in-process at batch sizes 1..512 (fp32/int8, 1/2 threads).
Plus JSON pixels on /v1/predict (no image decoding), real-world PNG renders,
the batcher's added latency at 1 client, time to ready, and RSS per worker.

CPU accounting on 2 cores: each server is pinned to core 1 (`taskset -c 1`)
and wrk (1 thread) to core 0, so "one worker" means one core. Every point is
repeated `--reps` times, rounds interleaved, and the median is quoted. A
correctness gate first checks that every body's answers match its labels.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from benchmarks.bodies import BATCH, BodySet, write_bodies
from benchmarks.server import ROOT, Server, histogram_delta, start_server, stop_servers_on_sigterm
from benchmarks.wrk import WrkResult, run_wrk

SERVER_CPU, CLIENT_CPU = "1", "0"
CONCURRENCY = (1, 8, 32, 128)
METRICS = ("rps", "per_cpu_s", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "errors")


@dataclass(frozen=True)
class Scenario:
    name: str
    server: str  # key into the servers started
    path: str
    body: str | None  # key into the body sets; None = GET
    images: int = 1  # images per request
    label: str = ""

    def url(self, servers: dict[str, Server]) -> str:
        return servers[self.server].url + self.path


V2_PATH = "/v2/models/mnist-mlp/infer"
SCENARIOS = (
    Scenario("healthz", "batching", "/healthz", None, 0, "(1) GET /healthz"),
    Scenario("png", "batching", "/v1/predict", "png", 1, "(2) PNG, batching on"),
    Scenario("png-nobatch", "nobatch", "/v1/predict", "png", 1, "(3) PNG, batching off"),
    Scenario("pixels", "batching", "/v1/predict", "pixels", 1, "JSON pixels, batching on"),
    Scenario("pixels-nobatch", "nobatch", "/v1/predict", "pixels", 1, "JSON pixels, batching off"),
    Scenario("png-delay0", "delay0", "/v1/predict", "png", 1, "PNG, batching on, delay 0"),
    Scenario(
        "pixels-delay0", "delay0", "/v1/predict", "pixels", 1, "JSON pixels, batching on, delay 0"
    ),
    Scenario("png-real", "batching", "/v1/predict", "png-real", 1, "real-world PNG renders"),
    Scenario(
        "batch-multipart",
        "batching",
        "/v1/predict/batch",
        "batch-multipart",
        BATCH,
        "(4) batch 64, multipart PNG",
    ),
    Scenario(
        "batch-json",
        "batching",
        "/v1/predict/batch",
        "batch-json",
        BATCH,
        "(4) batch 64, JSON base64 PNG",
    ),
    Scenario(
        "batch-v2-uint8",
        "batching",
        V2_PATH,
        "batch-v2-uint8",
        BATCH,
        "(4) batch 64, v2 UINT8 pixels",
    ),
)
SERVERS = {
    "batching": ["--no-access-log"],
    "nobatch": ["--no-access-log", "--no-batching"],
    "delay0": ["--no-access-log", "--max-queue-delay-ms", "0"],  # the tuned candidate default
}
ORT_CONFIGS = (("fp32", 1), ("fp32", 2), ("int8", 1), ("int8", 2))


def median_of(runs: Sequence[WrkResult]) -> dict[str, float]:
    return {key: round(statistics.median(getattr(r, key) for r in runs), 3) for key in METRICS}


def correctness_gate(servers: dict[str, Server], bodies: dict[str, BodySet]) -> dict[str, Any]:
    """Send every body once; the digits answered must match the labels (>= 90%)."""
    gate: dict[str, Any] = {}
    with httpx.Client(timeout=30) as client:
        for scenario in SCENARIOS:
            if scenario.body is None or scenario.name in gate:
                continue
            body_set = bodies[scenario.body]
            correct = total = 0
            for index, labels in enumerate(body_set.labels):
                data = (body_set.folder / f"{index}.body").read_bytes()
                response = client.post(
                    scenario.url(servers),
                    content=data,
                    headers={"Content-Type": body_set.content_type},
                )
                response.raise_for_status()
                answer = response.json()
                if "outputs" in answer:
                    digits = next(o for o in answer["outputs"] if o["name"] == "digit")["data"]
                elif "predictions" in answer:
                    digits = [p["digit"] for p in answer["predictions"]]
                else:
                    digits = [answer["digit"]]
                correct += sum(d == label for d, label in zip(digits, labels, strict=True))
                total += len(labels)
            gate[scenario.name] = {"accuracy": round(correct / total, 4), "images": total}
            if correct / total < 0.90:
                raise SystemExit(
                    f"correctness gate: {scenario.name} accuracy {correct / total:.2%}"
                )
    return gate


def run_http(
    servers: dict[str, Server],
    bodies: dict[str, BodySet],
    *,
    scenarios: Sequence[Scenario],
    concurrency: Sequence[int],
    seconds: float,
    reps: int,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Interleaved rounds over every (scenario, concurrency); returns runs + batch histograms."""
    runs: dict[str, dict[int, list[WrkResult]]] = {
        s.name: {c: [] for c in concurrency} for s in scenarios
    }
    histograms: dict[str, dict[int, dict[str, float]]] = {}
    for rep in range(reps):
        for scenario in scenarios:
            server = servers[scenario.server]
            for connections in concurrency:
                before = server.batch_histogram() if scenario.body else {}
                body_dir = bodies[scenario.body].folder if scenario.body else None
                result = run_wrk(
                    scenario.url(servers),
                    connections=connections,
                    seconds=seconds,
                    body_dir=body_dir,
                    cpus=CLIENT_CPU,
                    server_pid=server.process.pid,
                )
                runs[scenario.name][connections].append(result)
                if scenario.body and scenario.server != "nobatch":
                    delta = histogram_delta(before, server.batch_histogram())
                    total = histograms.setdefault(scenario.name, {}).setdefault(connections, {})
                    for bucket, count in delta.items():
                        total[bucket] = total.get(bucket, 0.0) + count
                log(
                    f"rep {rep + 1}/{reps} {scenario.name:16s} c={connections:<4d} "
                    f"{result.rps:9.1f} req/s ({result.per_cpu_s:7.0f}/CPU-s)  "
                    f"p50 {result.p50_ms:8.2f} ms  p99 {result.p99_ms:8.2f} ms  "
                    f"errors {result.errors}"
                )
    table: dict[str, Any] = {}
    for scenario in scenarios:
        table[scenario.name] = {
            "label": scenario.label,
            "images_per_request": scenario.images,
            "by_concurrency": {
                str(c): {
                    "median": {
                        **median_of(results),
                        "images_per_s": round(
                            statistics.median(r.rps for r in results) * max(scenario.images, 1), 1
                        ),
                        "images_per_cpu_s": round(
                            statistics.median(r.per_cpu_s for r in results)
                            * max(scenario.images, 1),
                            1,
                        ),
                    },
                    "runs": [r.as_dict() for r in results],
                }
                for c, results in runs[scenario.name].items()
            },
        }
    hist_out = {name: {str(c): h for c, h in by_c.items()} for name, by_c in histograms.items()}
    return table, hist_out


def run_module(module: str, args: Sequence[str], cpus: str | None) -> Any:
    command = [sys.executable, "-m", module, *args]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=True, timeout=900
    )
    return orjson.loads(done.stdout.strip().splitlines()[-1])


def ort_results(seconds: float, reps: int) -> list[Any]:
    """Raw ORT: 1 thread pinned to the server's core; 2 threads on both cores."""
    results = []
    for variant, threads in ORT_CONFIGS:
        cpus = SERVER_CPU if threads == 1 else f"{CLIENT_CPU},{SERVER_CPU}"
        args = [
            "--variant",
            variant,
            "--threads",
            str(threads),
            "--seconds",
            str(seconds),
            "--reps",
            str(reps),
        ]
        results.append({**run_module("benchmarks.ort_bench", args, cpus), "cpus": cpus})
    return results


def ready_times(count: int, log_dir: Path) -> list[float]:
    times = []
    for index in range(count):
        server = start_server(
            f"ready-{index}", SERVERS["batching"], cpus=SERVER_CPU, log_dir=log_dir
        )
        times.append(round(server.ready_s, 3))
        server.stop()
    return times


def ratios(http: dict[str, Any], ort: list[Any]) -> dict[str, Any]:
    """2/1 and 2/3 on wall-clock req/s (both sides measured alike); 4/5 as images per
    server CPU-second over raw ORT fp32 1 thread at batch 64 (batch ÷ median call):
    both are "one dedicated core" rates, so the ratio survives a shared machine."""

    def median(name: str, c: str, key: str) -> float:
        value: float = http[name]["by_concurrency"][c]["median"][key]
        return value

    ort_64 = next(
        r["batches"][str(BATCH)].get("images_per_s_p50", r["batches"][str(BATCH)]["images_per_s"])
        for r in ort
        if r["variant"] == "fp32" and r["threads"] == 1
    )
    out: dict[str, Any] = {}
    for c in http["healthz"]["by_concurrency"]:
        row = {
            "png/healthz (2/1)": median("png", c, "rps") / median("healthz", c, "rps"),
            "png batching/no batching (2/3)": median("png", c, "rps")
            / median("png-nobatch", c, "rps"),
        }
        if "png-delay0" in http:
            row["png delay 0/healthz"] = median("png-delay0", c, "rps") / median(
                "healthz", c, "rps"
            )
            row["png delay 0/no batching"] = median("png-delay0", c, "rps") / median(
                "png-nobatch", c, "rps"
            )
        for name in ("batch-multipart", "batch-json", "batch-v2-uint8"):
            if name in http:
                row[f"{name}/raw ORT b64 (4/5)"] = median(name, c, "images_per_cpu_s") / ort_64
        out[c] = {key: round(value, 3) for key, value in row.items()}
    return out


def machine() -> dict[str, Any]:
    training = subprocess.run(["pgrep", "-af", "training"], capture_output=True, text=True).stdout
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        ),
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "other_cpu_jobs": [line for line in training.splitlines() if "pgrep" not in line],
        "git_commit": commit,
        "pinning": f"server taskset -c {SERVER_CPU}, wrk -t1 taskset -c {CLIENT_CPU}",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="2 s per point (default)")
    mode.add_argument("--full", action="store_true", help="8 s per point")
    parser.add_argument("--seconds", type=float, help="Override the length of one wrk run")
    parser.add_argument("--reps", type=int, default=3, help="Repeats per point (median quoted)")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--only", default="", help="Comma-separated scenario names")
    parser.add_argument("--skip-ort", action="store_true", help="Skip the raw ORT benchmark")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--plots", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--name", default="", help="Result file stem (default: quick/full)")
    options = parser.parse_args(argv)
    stop_servers_on_sigterm()

    seconds = options.seconds or (8.0 if options.full else 2.0)
    stem = options.name or ("full" if options.full else "quick")
    concurrency = [int(c) for c in options.concurrency.split(",")]
    wanted = set(options.only.split(",")) if options.only else None
    scenarios = [s for s in SCENARIOS if wanted is None or s.name in wanted or s.name == "healthz"]
    options.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {message}", flush=True)

    results: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "seconds_per_point": seconds,
            "reps": options.reps,
            "concurrency": concurrency,
            "servers": {name: ["python -m service", *args] for name, args in SERVERS.items()},
        },
    }
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as scratch:
        work = Path(scratch)
        bodies = write_bodies(work / "bodies")
        servers: dict[str, Server] = {}
        try:
            for name, args in SERVERS.items():
                servers[name] = start_server(name, args, cpus=SERVER_CPU, log_dir=work / "logs")
                log(
                    f"server {name} ready in {servers[name].ready_s:.2f} s, "
                    f"RSS {servers[name].rss_idle_mb} MB"
                )
            results["accuracy_gate"] = correctness_gate(servers, bodies)
            log(f"correctness gate: {results['accuracy_gate']}")
            results["http"], results["batch_size_histograms"] = run_http(
                servers,
                bodies,
                scenarios=scenarios,
                concurrency=concurrency,
                seconds=seconds,
                reps=options.reps,
                log=log,
            )
            results["servers"] = {
                name: {
                    "ready_s": round(s.ready_s, 3),
                    "rss_idle_mb": s.rss_idle_mb,
                    "rss_after_load_mb": s.rss_mb(),
                }
                for name, s in servers.items()
            }
        finally:
            for server in servers.values():
                server.stop()
        results["ready_s"] = ready_times(3, work / "logs")
        log(f"time to ready: {results['ready_s']} s")
        results["batcher_latency"] = run_module(
            "benchmarks.batcher_latency",
            ["--requests", "3000" if options.full else "1000"],
            SERVER_CPU,
        )
        log(f"batcher latency: {results['batcher_latency']['added_p50_us_over_direct']}")
        if not options.skip_ort:
            results["ort"] = ort_results(1.0 if options.full else 0.3, options.reps)
            for row in results["ort"]:
                log(
                    f"ORT {row['variant']} threads={row['threads']}: "
                    + ", ".join(
                        f"b{b} {v['images_per_s']:.0f}/s" for b, v in row["batches"].items()
                    )
                )
            if {"healthz", "png", "png-nobatch"} <= set(results["http"]):
                results["ratios"] = ratios(results["http"], results["ort"])
    results["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    results["elapsed_s"] = round(time.monotonic() - started, 1)

    json_path = options.out / f"{stem}.json"
    json_path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    from benchmarks.report import write_report

    markdown = write_report(results, options.out / f"{stem}.md", options.plots, stem)
    print(markdown)
    log(f"wrote {json_path}, {options.out / (stem + '.md')} and plots in {options.plots}")


if __name__ == "__main__":
    main()
