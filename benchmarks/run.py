"""mnist-serve side by side with what a user would run instead, in one command.

    python -m benchmarks.run --quick          # ~10 min: 2 s per point
    python -m benchmarks.run --full           # ~30 min: 5 s per point (--seconds N)
    python -m benchmarks.run --full --out benchmarks/results --plots docs/img

Servers, all one process pinned to core 1 (`taskset -c 1`), wrk (1 thread) on core 0:
  service          `mnist-serve` with its shipped defaults (batching, real-photo
                   preprocessing, metrics, access log, limits, auth hooks all on);
  service-nobatch  the same with `--no-batching` (one onnxruntime call per request);
  plain            the plain FastAPI + onnxruntime app a user would write instead
                   (`benchmarks/baselines/plain_fastapi.py`): Pillow resize to 28x28,
                   one `session.run` per request, no batching, limits or metrics;
  raw              a raw ASGI app (`benchmarks/baselines/raw_asgi.py`): the floor.
Every app serves the same ONNX file (the card's serving variant).

The same bodies go to the service and to the plain app: a 28x28 MNIST PNG, JSON
pixels, JSON base64, a 280x280 canvas PNG like the web page sends, and a
1000x1000 phone JPEG; each point is repeated `--reps` times in interleaved
rounds and the median quoted. A correctness gate first checks the service's
answers against the labels (and reports the plain app's accuracy on the same
bodies). Also: the batch endpoint, raw onnxruntime, the batcher's added latency,
time to ready and memory.
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
from benchmarks.server import (
    ROOT,
    SERVED_VERSION_DIR,
    Server,
    histogram_delta,
    start_server,
    stop_servers_on_sigterm,
)
from benchmarks.wrk import WrkResult, run_wrk
from service.model import verify_model_files

SERVER_CPU, CLIENT_CPU = "1", "0"
CONCURRENCY = (1, 32, 128)
METRICS = ("rps", "per_cpu_s", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "errors")
MODEL_DIR = SERVED_VERSION_DIR
V2_PATH = "/v2/models/mnist-mlp/infer"
UVICORN = ["{python}", "-m", "uvicorn", "--port", "{port}", "--log-level", "warning"]


@dataclass(frozen=True)
class Scenario:
    name: str
    server: str  # key of SERVERS
    path: str
    body: str | None  # key of the body sets; None = GET
    images: int = 1  # images per request
    label: str = ""
    versus: str = ""  # the plain app's scenario for the same body: ratios are taken to it

    def url(self, servers: dict[str, Server]) -> str:
        return servers[self.server].url + self.path


SCENARIOS = (
    Scenario("healthz", "service", "/healthz", None, 0, "GET /healthz"),
    Scenario("png", "service", "/v1/predict", "png", 1, "28x28 PNG", "plain-png"),
    Scenario("plain-png", "plain", "/predict", "png", 1, "28x28 PNG, plain app"),
    Scenario("raw-png", "raw", "/predict", "png", 1, "28x28 PNG, raw ASGI floor"),
    Scenario("png-nobatch", "service-nobatch", "/v1/predict", "png", 1, "28x28 PNG, no batching"),
    Scenario("pixels", "service", "/v1/predict", "pixels", 1, "JSON pixels", "plain-pixels"),
    Scenario("plain-pixels", "plain", "/predict/json", "pixels", 1, "JSON pixels, plain app"),
    Scenario("base64", "service", "/v1/predict", "base64", 1, "JSON base64 PNG", "plain-base64"),
    Scenario("plain-base64", "plain", "/predict/json", "base64", 1, "JSON base64, plain app"),
    Scenario("canvas", "service", "/v1/predict", "canvas", 1, "280x280 canvas PNG", "plain-canvas"),
    Scenario("plain-canvas", "plain", "/predict", "canvas", 1, "280x280 canvas, plain app"),
    Scenario("photo", "service", "/v1/predict", "photo", 1, "1000x1000 phone JPEG", "plain-photo"),
    Scenario("plain-photo", "plain", "/predict", "photo", 1, "1000x1000 JPEG, plain app"),
    Scenario("batch-json", "service", "/v1/predict/batch", "batch-json", BATCH, "batch 64, base64"),
    Scenario("batch-multipart", "service", "/v1/predict/batch", "batch-multipart", BATCH,
             "batch 64, multipart"),
    Scenario("batch-v2-uint8", "service", V2_PATH, "batch-v2-uint8", BATCH, "v2 JSON 64xUINT8"),
)  # fmt: skip


def served_model_file() -> Path:
    """The file the service serves by default (the card's serving variant)."""
    return verify_model_files(MODEL_DIR).path


def servers_to_start() -> dict[str, dict[str, Any]]:
    model = {"MODEL": str(served_model_file())}
    return {
        "service": {"args": []},
        "service-nobatch": {"args": ["--no-batching"]},
        "plain": {
            "command": [*UVICORN, "benchmarks.baselines.plain_fastapi:app", "--no-access-log"],
            "env": model,
            "ready_path": "/healthz",
        },
        "raw": {
            "command": [*UVICORN, "benchmarks.baselines.raw_asgi:app", "--no-access-log"],
            "env": model,
            "ready_path": "/healthz",
        },
    }


def median_of(runs: Sequence[WrkResult]) -> dict[str, float]:
    return {key: round(statistics.median(getattr(r, key) for r in runs), 3) for key in METRICS}


def _digits(answer: dict[str, Any]) -> list[int]:
    if "outputs" in answer:
        return list(next(o for o in answer["outputs"] if o["name"] == "digit")["data"])
    if "predictions" in answer:
        return [p["digit"] for p in answer["predictions"]]
    return [answer["digit"]]


def correctness_gate(
    scenarios: Sequence[Scenario], servers: dict[str, Server], bodies: dict[str, BodySet]
) -> dict[str, Any]:
    """Send every body once; the service's digits must match the labels (>= 90%).
    The plain app's accuracy on the same bodies is recorded, not gated."""
    gate: dict[str, Any] = {}
    with httpx.Client(timeout=30) as client:
        for scenario in scenarios:
            if scenario.body is None or scenario.server == "raw":
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
                digits = _digits(response.json())
                correct += sum(d == label for d, label in zip(digits, labels, strict=True))
                total += len(labels)
            accuracy = correct / total
            gate[scenario.name] = {"accuracy": round(accuracy, 4), "images": total}
            if scenario.server.startswith("service") and accuracy < 0.90:
                raise SystemExit(f"correctness gate: {scenario.name} accuracy {accuracy:.2%}")
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
            counts_batches = scenario.body is not None and scenario.server == "service"
            for connections in concurrency:
                before = server.batch_histogram() if counts_batches else {}
                result = run_wrk(
                    scenario.url(servers),
                    connections=connections,
                    seconds=seconds,
                    body_dir=bodies[scenario.body].folder if scenario.body else None,
                    cpus=CLIENT_CPU,
                    server_pid=server.process.pid,
                )
                runs[scenario.name][connections].append(result)
                if counts_batches:
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
        images = max(scenario.images, 1)
        table[scenario.name] = {
            "label": scenario.label,
            "server": scenario.server,
            "images_per_request": scenario.images,
            "versus": scenario.versus,
            "by_concurrency": {
                str(c): {
                    "median": {
                        **median_of(results),
                        "images_per_s": round(
                            statistics.median(r.rps for r in results) * images, 1
                        ),
                        "images_per_cpu_s": round(
                            statistics.median(r.per_cpu_s for r in results) * images, 1
                        ),
                    },
                    "runs": [r.as_dict() for r in results],
                }
                for c, results in runs[scenario.name].items()
            },
        }
    hist_out = {name: {str(c): h for c, h in by_c.items()} for name, by_c in histograms.items()}
    return table, hist_out


def versus_plain(http: dict[str, Any]) -> dict[str, Any]:
    """Service ÷ plain app, per body and concurrency: req/s (wall), req per CPU-second,
    and the two p99 latencies."""
    out: dict[str, Any] = {}
    for name, data in http.items():
        plain = http.get(data["versus"])
        if plain is None:
            continue
        rows = {}
        for c, point in data["by_concurrency"].items():
            mine, theirs = point["median"], plain["by_concurrency"][c]["median"]
            rows[c] = {
                "rps": mine["rps"],
                "plain_rps": theirs["rps"],
                "ratio": round(mine["rps"] / theirs["rps"], 3) if theirs["rps"] else 0.0,
                "per_cpu_ratio": round(mine["per_cpu_s"] / theirs["per_cpu_s"], 3)
                if theirs["per_cpu_s"]
                else 0.0,
                "p99_ms": mine["p99_ms"],
                "plain_p99_ms": theirs["p99_ms"],
            }
        out[name] = {"label": data["label"], "by_concurrency": rows}
    return out


def run_module(module: str, args: Sequence[str], cpus: str | None) -> Any:
    command = [sys.executable, "-m", module, *args]
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=True, timeout=900
    )
    return orjson.loads(done.stdout.strip().splitlines()[-1])


def ort_results(seconds: float, reps: int) -> list[Any]:
    """Raw onnxruntime in-process, 1 thread pinned to the server's core."""
    results = []
    for variant in ("fp32", "int8"):
        args = ["--variant", variant, "--threads", "1", "--seconds", str(seconds)]
        args += ["--reps", str(reps)]
        results.append({**run_module("benchmarks.ort_bench", args, SERVER_CPU), "cpus": SERVER_CPU})
    return results


def ready_times(count: int, log_dir: Path) -> list[float]:
    times = []
    for index in range(count):
        server = start_server(f"ready-{index}", [], cpus=SERVER_CPU, log_dir=log_dir)
        times.append(round(server.ready_s, 3))
        server.stop()
    return times


def machine() -> dict[str, Any]:
    """What a reader needs to judge the numbers: CPU, cores, load, other busy processes."""
    busy = subprocess.run(
        ["ps", "-eo", "pcpu=,comm=", "--sort=-pcpu"], capture_output=True, text=True
    ).stdout.splitlines()
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
        "other_busy_processes": [
            line.strip() for line in busy[:5] if float(line.split()[0] or 0) >= 10.0
        ],
        "git_commit": commit,
        "pinning": f"servers taskset -c {SERVER_CPU}, wrk -t1 taskset -c {CLIENT_CPU}",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="2 s per point (default)")
    mode.add_argument("--full", action="store_true", help="5 s per point")
    parser.add_argument("--seconds", type=float, help="Override the length of one wrk run")
    parser.add_argument("--reps", type=int, default=3, help="Repeats per point (median quoted)")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--only", default="", help="Comma-separated scenario names")
    parser.add_argument("--skip-extras", action="store_true", help="No ORT, ready, latency runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--plots", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--name", default="", help="Result file stem (default: quick/full)")
    options = parser.parse_args(argv)
    stop_servers_on_sigterm()

    seconds = options.seconds or (5.0 if options.full else 2.0)
    stem = options.name or ("full" if options.full else "quick")
    concurrency = [int(c) for c in options.concurrency.split(",")]
    wanted = set(options.only.split(",")) if options.only else None
    scenarios = [
        s
        for s in SCENARIOS
        if wanted is None or s.name == "healthz" or s.name.removeprefix("plain-") in wanted
    ]
    options.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {message}", flush=True)

    needed = {s.server for s in scenarios}
    plan = {name: spec for name, spec in servers_to_start().items() if name in needed}
    results: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "seconds_per_point": seconds,
            "reps": options.reps,
            "concurrency": concurrency,
            "model_file": served_model_file().relative_to(ROOT).as_posix(),
            "servers": {
                name: " ".join(spec.get("command") or ["mnist-serve", *spec["args"]])
                for name, spec in plan.items()
            },
        },
    }
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as scratch:
        work = Path(scratch)
        bodies = write_bodies(work / "bodies")
        servers: dict[str, Server] = {}
        try:
            for name, spec in plan.items():
                servers[name] = start_server(
                    name,
                    spec.get("args", []),
                    command=spec.get("command"),
                    env=spec.get("env"),
                    cpus=SERVER_CPU,
                    log_dir=work / "logs",
                    ready_path=spec.get("ready_path", "/readyz"),
                )
                log(f"server {name} ready in {servers[name].ready_s:.2f} s")
            results["accuracy_gate"] = correctness_gate(scenarios, servers, bodies)
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
            results["versus_plain"] = versus_plain(results["http"])
            results["rss_mb"] = {name: s.rss_mb() for name, s in servers.items()}
        finally:
            for server in servers.values():
                server.stop()
        if not options.skip_extras:
            results["ready_s"] = ready_times(3, work / "logs")
            log(f"time to ready: {results['ready_s']} s")
            results["batcher_latency"] = run_module(
                "benchmarks.batcher_latency", ["--requests", "1000", "--delays-ms", "0"], SERVER_CPU
            )
            results["ort"] = ort_results(1.0 if options.full else 0.3, options.reps)
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
