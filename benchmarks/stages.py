"""Where a request's CPU time goes, stage by stage, now and at an earlier revision.

    python -m benchmarks.stages [--before d2d21fb] [--body png] [--seconds 8]

For each server (this checkout, and `--before` checked out into a temporary git
worktree) pinned to core 1: wrk on core 0 posts the body at 32 connections while
py-spy samples the server, first into a flame graph (SVG), then as raw stacks.
Each sample is put into a stage by its innermost recognisable frame; the share
of (non-idle) samples per stage times the server's measured CPU per request
gives CPU µs per request and stage. Sampling, so expect a few µs of noise.
Writes `<out>/stages.json`, `<out>/stages.md` and `<plots>/flame-<name>.svg`.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import orjson

from benchmarks.bodies import write_bodies
from benchmarks.run import CLIENT_CPU, SERVER_CPU, machine
from benchmarks.server import ROOT, start_server, stop_servers_on_sigterm
from benchmarks.wrk import run_wrk

PY_SPY = shutil.which("py-spy") or "py-spy"
CONNECTIONS = 32
# (stage, substrings of "function (file" that put a frame in it), innermost frame wins;
# the order breaks ties inside one frame.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("idle", ("Condition.wait", "select (", "_worker (thread.py")),
    ("inference", ("Session.run", "OnnxModel.predict")),
    ("decode", ("PIL/", "ImageFile", "PngImagePlugin", "JpegImagePlugin", "decode.py")),
    ("preprocess", ("service/preprocess/",)),
    ("metrics", ("prometheus_client/", "service/metrics.py")),
    ("access log", ("AccessLog", "logging/")),
    ("hand-off", ("service/batching.py", "threading.py", "call_soon_threadsafe", "concurrent/")),
    ("body read", ("read_body", "Request.body", "Request.stream", "RequestResponseCycle.receive",
                   "multipart", "formparsers", "Request.form")),
    ("parse + validate", ("service/api/parsing.py", "service/api/tensors.py", "service/inputs.py",
                          "orjson.loads", "api/schemas")),
    ("response", ("JSONAnswer", "FastJSONResponse", "answers.py", "responses.py",
                  "prediction_items", "render")),
    ("admission", ("admission.py", "auth.py", "ApiKeyGate", "lifecycle.py")),
    ("observation", ("observation.py", "RequestMiddleware", "middleware.py")),
    ("predictor", ("service/predictor.py", "service/registry.py")),
    ("routing + framework", ("fastapi/", "starlette/", "fast_routes.py", "anyio/")),
    ("route handler", ("service/api/",)),
    ("HTTP server", ("uvicorn/", "service/server.py", "httptools")),
)  # fmt: skip
OTHER = "event loop + other"


def stage_of(stack: list[str]) -> str:
    for frame in reversed(stack):  # innermost first
        for stage, needles in STAGES:
            if any(needle in frame for needle in needles):
                return stage
    return OTHER


def stage_shares(folded: Path) -> tuple[dict[str, float], int]:
    """Fraction of the non-idle samples per stage, and the number of samples."""
    counts: collections.Counter[str] = collections.Counter()
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        counts[stage_of(stack.split(";"))] += int(count)
    busy = sum(v for k, v in counts.items() if k != "idle")
    return {k: v / busy for k, v in counts.most_common() if k != "idle"}, busy


def profile_server(
    name: str, cwd: Path, body_dir: Path, path: str, seconds: float, out: Path, plots: Path
) -> dict[str, Any]:
    server = start_server(name, [], cpus=SERVER_CPU, log_dir=out / "logs", cwd=cwd)
    try:
        folded = out / f"stages-{name}.folded"
        svg = plots / f"flame-{name}.svg"

        def record() -> None:
            half = max(int(seconds // 2) - 1, 1)
            common = ["-p", str(server.process.pid), "-r", "500", "--nonblocking", "-d", str(half)]
            subprocess.run([PY_SPY, "record", *common, "-o", str(svg)], capture_output=True)
            if svg.exists():  # its title holds the command line: no machine paths in docs
                svg.write_text(svg.read_text().replace(PY_SPY, "py-spy").replace(f"{ROOT}/", ""))
            subprocess.run(
                [PY_SPY, "record", *common, "-f", "raw", "-o", str(folded)], capture_output=True
            )

        recorder = threading.Thread(target=record)
        recorder.start()
        result = run_wrk(
            server.url + path,
            connections=CONNECTIONS,
            seconds=seconds,
            body_dir=body_dir,
            cpus=CLIENT_CPU,
            server_pid=server.process.pid,
        )
        recorder.join()
    finally:
        server.stop()
    cpu_us = result.server_cpu_s / max(result.ok, 1) * 1e6
    shares, samples = stage_shares(folded)
    return {
        "rps": round(result.rps, 1),
        "cpu_us_per_request": round(cpu_us, 1),
        "samples": samples,
        "stages_us": {stage: round(share * cpu_us, 1) for stage, share in shares.items()},
        "flame_graph": svg.relative_to(ROOT).as_posix() if svg.is_relative_to(ROOT) else str(svg),
    }


def markdown(results: dict[str, Any]) -> str:
    names = list(results["servers"])
    stages = [s for s, _ in STAGES if s != "idle"] + [OTHER]
    lines = [
        f"CPU µs per request by stage, {results['body']} body at {CONNECTIONS} connections, "
        "1 worker on 1 core (py-spy samples × measured CPU per request).",
        "",
        "| stage | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for stage in stages:
        cells = [f"{results['servers'][n]['stages_us'].get(stage, 0.0):.1f}" for n in names]
        if any(c != "0.0" for c in cells):
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    total = [f"**{results['servers'][n]['cpu_us_per_request']:.1f}**" for n in names]
    lines.append("| **total CPU per request** | " + " | ".join(total) + " |")
    rps = [f"{results['servers'][n]['rps']:,.0f}" for n in names]
    lines.append("| requests/s (shared machine) | " + " | ".join(rps) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="", help="Git revision to compare with (optional)")
    parser.add_argument("--body", default="png", help="Body set of benchmarks.bodies")
    parser.add_argument("--path", default="/v1/predict")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--plots", type=Path, default=ROOT / "docs" / "img")
    options = parser.parse_args(argv)
    stop_servers_on_sigterm()
    options.out.mkdir(parents=True, exist_ok=True)
    options.plots.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine(), "body": options.body, "servers": {}}
    with tempfile.TemporaryDirectory(prefix="mnist-stages-") as scratch:
        work = Path(scratch)
        body_dir = write_bodies(work / "bodies")[options.body].folder
        targets = {"now": ROOT}
        if options.before:
            before = work / "before"
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(before), options.before],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            targets = {f"before ({options.before})": before, "now": ROOT}
        try:
            for label, cwd in targets.items():
                name = "now" if cwd == ROOT else "before"
                results["servers"][label] = profile_server(
                    name, cwd, body_dir, options.path, options.seconds, work, options.plots
                )
                print(label, orjson.dumps(results["servers"][label]).decode(), flush=True)
        finally:
            if options.before:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(work / "before")],
                    cwd=ROOT,
                    capture_output=True,
                )
    (options.out / "stages.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    text = markdown(results)
    (options.out / "stages.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
