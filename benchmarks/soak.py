"""Soak test: hours-long behaviour in minutes. Memory and latency must not drift.

    python -m benchmarks.soak --minutes 10 --rate-fraction 0.7

Starts the service on a free 127.0.0.1 port (or targets --url, with --pid for its
memory), measures its capacity briefly (closed loop), then drives an open-loop
load at `rate-fraction` x capacity for `--minutes`, sampling every `--interval`
seconds: the server's resident memory (RSS, summed over its process tree), the
p50/p99 latency of the window, throughput and every non-200 answer. It reports
the growth rates (RSS MB/hour and latency ms/hour, least-squares slopes after a
warm-up) and writes `soak.json` and `soak.png` to `--out`.

Not part of CI (it is long by design). On a shared machine, CPU taken by other
work shows up as latency noise; RSS growth is the robust signal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from evaluation.live_server import live_server
from evaluation.loadgen import (
    Result,
    build_request,
    closed_loop,
    host_port,
    open_loop,
    percentile,
    run_async,
)
from evaluation.samples import SEVEN_PNG


@dataclass
class Sample:
    t_s: float  # since the load started
    rss_mb: float
    rps: float
    ok: int
    not_ok: int
    p50_ms: float
    p99_ms: float


@dataclass
class Window:
    started: float
    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    not_ok: int = 0

    def add(self, result: Result) -> None:
        if result.status == 200:
            self.ok += 1
            self.latencies.append(result.latency_s)
        else:
            self.not_ok += 1


def slope_per_hour(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (seconds), scaled to per hour."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return float("nan")
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    return cov / var * 3600.0


def quarter_median(samples: list[Sample], name: str, *, first: bool) -> float | None:
    quarter = max(1, len(samples) // 4)
    chosen = samples[:quarter] if first else samples[-quarter:]
    return percentile([getattr(s, name) for s in chosen], 0.5) if chosen else None


def tree_rss_mb(process: psutil.Process) -> float:
    """RSS of the server and its children (uvicorn --workers N forks)."""
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return float(total) / 2**20


async def soak(
    url: str,
    pid: int | None,
    *,
    minutes: float,
    rate_fraction: float,
    interval_s: float,
    capacity_s: float,
    concurrency: int,
) -> dict[str, object]:
    host, port = host_port(url)
    request = build_request("/v1/predict", SEVEN_PNG, "image/png")
    process = psutil.Process(pid) if pid else None

    await closed_loop(host, port, request, concurrency=concurrency, duration_s=1.0)
    measured = await closed_loop(
        host, port, request, concurrency=concurrency, duration_s=capacity_s
    )
    capacity = measured.rate(200)
    rate = rate_fraction * capacity
    print(f"capacity {capacity:.0f} req/s; soaking at {rate:.0f} req/s for {minutes:g} min")

    window = Window(time.monotonic())
    samples: list[Sample] = []
    statuses: dict[str, int] = {}
    load_started = time.monotonic()

    def on_result(result: Result) -> None:
        window.add(result)
        key = str(result.status) if result.status is not None else str(result.error)
        statuses[key] = statuses.get(key, 0) + 1

    async def sampler() -> None:
        nonlocal window
        while True:
            await asyncio.sleep(interval_s)  # the sampling period itself
            done, window = window, Window(time.monotonic())
            seconds = window.started - done.started
            sample = Sample(
                t_s=round(window.started - load_started, 2),
                rss_mb=round(tree_rss_mb(process), 2) if process else float("nan"),
                rps=round(done.ok / seconds, 1),
                ok=done.ok,
                not_ok=done.not_ok,
                p50_ms=round(1000 * percentile(done.latencies, 0.50), 2),
                p99_ms=round(1000 * percentile(done.latencies, 0.99), 2),
            )
            samples.append(sample)
            print(
                f"t={sample.t_s:7.1f}s rss={sample.rss_mb:7.1f}MB ok/s={sample.rps:6.1f} "
                f"p50={sample.p50_ms:6.1f}ms p99={sample.p99_ms:7.1f}ms not-ok={sample.not_ok}",
                flush=True,
            )

    sampling = asyncio.create_task(sampler())
    run = await open_loop(
        host,
        port,
        request,
        rate=rate,
        duration_s=minutes * 60,
        max_connections=concurrency * 2,
        on_result=on_result,
        keep_results=False,
    )
    sampling.cancel()

    warm = [s for s in samples if s.t_s >= min(60.0, minutes * 60 * 0.2)]  # skip warm-up
    xs = [s.t_s for s in warm]
    total = sum(statuses.values())
    return {
        "command": "python -m benchmarks.soak " + " ".join(sys.argv[1:]),
        "url": url,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - run.seconds)),
        "minutes": minutes,
        "capacity_rps": round(capacity, 1),
        "target_rps": round(rate, 1),
        "achieved_ok_rps": round(statuses.get("200", 0) / run.seconds, 1),
        "requests": total,
        "statuses": statuses,
        "non_200_fraction": round(1 - statuses.get("200", 0) / total, 6) if total else None,
        "rss_start_mb": warm[0].rss_mb if warm else None,
        "rss_end_mb": warm[-1].rss_mb if warm else None,
        "rss_growth_mb_per_hour": round(slope_per_hour(xs, [s.rss_mb for s in warm]), 2),
        "p50_drift_ms_per_hour": round(slope_per_hour(xs, [s.p50_ms for s in warm]), 2),
        "p99_drift_ms_per_hour": round(slope_per_hour(xs, [s.p99_ms for s in warm]), 2),
        "p50_ms_median": percentile([s.p50_ms for s in warm], 0.5) if warm else None,
        "p99_ms_median": percentile([s.p99_ms for s in warm], 0.5) if warm else None,
        # Robust to the noise of a shared box: median of the first vs the last quarter.
        "p50_ms_first_quarter": quarter_median(warm, "p50_ms", first=True),
        "p50_ms_last_quarter": quarter_median(warm, "p50_ms", first=False),
        "p99_ms_first_quarter": quarter_median(warm, "p99_ms", first=True),
        "p99_ms_last_quarter": quarter_median(warm, "p99_ms", first=False),
        "cpu_count": psutil.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in psutil.getloadavg()],
        "samples": [asdict(s) for s in samples],
    }


def plot(report: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report["samples"]
    assert isinstance(samples, list)
    t = [s["t_s"] / 60 for s in samples]
    figure, (memory, latency) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    memory.plot(t, [s["rss_mb"] for s in samples], color="tab:blue")
    memory.set_ylabel("server RSS (MB)")
    memory.set_title(
        f"soak at {report['target_rps']} req/s "
        f"(RSS {report['rss_growth_mb_per_hour']} MB/h, p99 {report['p99_drift_ms_per_hour']} ms/h)"
    )
    latency.plot(t, [s["p50_ms"] for s in samples], label="p50")
    latency.plot(t, [s["p99_ms"] for s in samples], label="p99")
    latency.set_yscale("log")
    latency.set_ylabel("latency (ms)")
    latency.set_xlabel("minutes")
    latency.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate-fraction", type=float, default=0.7, help="of measured capacity")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--capacity-seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64, help="capacity probe connections")
    parser.add_argument("--url", help="soak a running server instead of starting one")
    parser.add_argument("--pid", type=int, help="with --url: the server's pid, for its RSS")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "mnist-soak")
    args = parser.parse_args(argv)

    with ExitStack() as stack:
        url, pid = args.url, args.pid
        if url is None:
            workdir = Path(tempfile.mkdtemp(prefix="mnist-soak-"))
            server = stack.enter_context(live_server(workdir, env={"MNIST_ACCESS_LOG": "true"}))
            url, pid = server.url, server.process.pid
        report = run_async(
            lambda: soak(
                url,
                pid,
                minutes=args.minutes,
                rate_fraction=args.rate_fraction,
                interval_s=args.interval,
                capacity_s=args.capacity_seconds,
                concurrency=args.concurrency,
            )
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "soak.png")
    summary = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out / 'soak.json'} and {args.out / 'soak.png'}")


if __name__ == "__main__":
    main()
