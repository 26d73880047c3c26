"""Overload: 1,024 and 4,096 connections against one worker with its shipped defaults.

    python -m benchmarks.overload                      # 1024, 4096 connections, 10 s, 3 rounds
    python -m benchmarks.overload --connections 1024 --seconds 5 --rounds 1

One `mnist-serve` (1 worker, defaults) pinned to core 1, wrk (1 thread, keep-alive
connections posting 28x28 PNGs, `--timeout 5s`) pinned to core 0, as in
`benchmarks.run`. Runs are interleaved in `--rounds` rounds: 32 connections,
then each overload point, ..., and 32 connections once more at the end. A
round's capacity is the mean of the 32-connection rates before and after it
(a shared machine drifts by 20% over minutes); the goodput quoted for a point is
the median over rounds of its rate divided by its round's capacity. Goodput per
CPU-second (successes per server CPU-second, against the same at 32) is printed
beside it: the same ratio, immune to other jobs stealing the core.

N connections means N in total: wrk's N - 16 and the probe's 16 (so 4,096 stays
within the worker's default `MNIST_MAX_CONNECTIONS` of 4,096). wrk counts answers
by status and socket errors (connect/read/write: clients that
got no HTTP answer) and timeouts, but cannot time answers by status. So during
each run a probe (16 connections in this process, part of the load: 4
keep-alive, 12 opening a fresh connection per request and honouring
`Retry-After`, since a keep-alive client is refused only once, when it arrives)
times every answer it gets: the refusal (429/503) latency percentiles come from
it, pooled over the rounds (a run gives ~100), apart for the storm (the first
2 s, while wrk opens all its connections at once) and after it. The CPU a
refusal costs is measured apart, by `python -m benchmarks.refusal_cost`: here
refusals are a few percent of the answers, so the server CPU left over after
the successes is noise (it even comes out negative, as batches grow under
load). After the spike, /readyz and one prediction are checked (ready and
correct).

Writes `--out/<name>.json` and `<name>.md` (default benchmarks/results/overload.*).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bodies import write_bodies
from benchmarks.report import save_results
from benchmarks.run import CLIENT_CPU, SERVER_CPU, machine
from benchmarks.server import ROOT, Server, start_server, stop_servers_on_sigterm
from benchmarks.wrk import STATUS_LUA, WrkResult, run_wrk
from evaluation.loadgen import Result, build_request, closed_loop, host_port, percentile
from evaluation.samples import SEVEN_PNG

STATUS_SCRIPT = STATUS_LUA
WRK_TIMEOUT_S = 5.0
PROBES = 16
STORM_S = 2.0  # wrk opens all its connections at the start of a run: the storm
NEWCOMERS = 12  # of the probe's connections: a fresh one per request
REFUSED = (429, 503)


def raise_file_limit(needed: int) -> int:
    """4,096 connections need more descriptors than the usual 1,024 (wrk and the
    server inherit this process's limit); raise the soft limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Probe:
    """Closed-loop clients beside wrk, timing every answer by status: keep-alive ones,
    and `NEWCOMERS` that open a fresh connection for every request, so refusals are
    timed all through the run (a keep-alive client is refused once, on arrival)."""

    def __init__(self, url: str, connections: int) -> None:
        self.host, self.port = host_port(url)
        self.connections = connections
        self.results: list[Result] = []
        self._thread: threading.Thread | None = None
        self.started = 0.0

    def start(self, seconds: float) -> None:
        request = build_request("/v1/predict", SEVEN_PNG, "image/png")
        self.started = time.monotonic()

        async def both() -> list[Result]:
            kept, fresh = await asyncio.gather(
                closed_loop(
                    self.host,
                    self.port,
                    request,
                    concurrency=self.connections - NEWCOMERS,
                    duration_s=seconds,
                ),
                closed_loop(
                    self.host,
                    self.port,
                    request,
                    concurrency=NEWCOMERS,
                    duration_s=seconds,
                    fresh_connections=True,
                ),
            )
            return kept.results + fresh.results

        def run() -> None:
            self.results = asyncio.run(both())

        self._thread = threading.Thread(target=run, name="probe", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout_s)

    def summary(self) -> dict[str, Any]:
        refused = [r.latency_s for r in self.results if r.status in REFUSED]
        # Refusals of clients that arrived once wrk's own connections were all in:
        # what a newcomer meets during an ongoing overload, not during the storm.
        settled = self.started + STORM_S
        steady = [r.latency_s for r in self.results if r.status in REFUSED and r.sent >= settled]
        ok = [r.latency_s for r in self.results if r.status == 200]
        codes = Counter(str(r.status) if r.status else str(r.error) for r in self.results)

        def ms(values: list[float], fraction: float) -> float | None:
            return round(1000 * percentile(values, fraction), 2) if values else None

        storm = [r.latency_s for r in self.results if r.status in REFUSED and r.sent < settled]
        return {
            "steady_refusals_ms": sorted(round(1000 * s, 2) for s in steady),
            "storm_refusals_ms": sorted(round(1000 * s, 2) for s in storm),
            "codes": dict(codes),
            "refusals_timed": len(refused),
            "refusal_p50_ms": ms(refused, 0.50),
            "refusal_p90_ms": ms(refused, 0.90),
            "refusal_p99_ms": ms(refused, 0.99),
            "refusal_max_ms": ms(refused, 1.0),
            "steady_refusals_timed": len(steady),
            "steady_refusal_p50_ms": ms(steady, 0.50),
            "steady_refusal_p99_ms": ms(steady, 0.99),
            "ok_p50_ms": ms(ok, 0.50),
            "ok_p99_ms": ms(ok, 0.99),
        }


def after_spike(server: Server) -> dict[str, Any]:
    """Ready and correct right after the load stopped: /readyz, then one prediction,
    retried after `Retry-After` while the work the spike left behind is finished."""
    started = time.perf_counter()
    ready = httpx.get(f"{server.url}/readyz", timeout=10).status_code
    statuses = []
    for _ in range(5):
        answer = httpx.post(
            f"{server.url}/v1/predict",
            content=SEVEN_PNG,
            headers={"Content-Type": "image/png"},
            timeout=10,
        )
        statuses.append(answer.status_code)
        if answer.status_code not in REFUSED:
            break
        time.sleep(float(answer.headers.get("retry-after", "1")))  # as a client should
    return {
        "readyz": ready,
        "predict_statuses": statuses,
        "digit": answer.json().get("digit") if answer.status_code == 200 else None,
        "first_answers_ms": round(1000 * (time.perf_counter() - started), 1),
    }


def one_run(server: Server, body_dir: Path, connections: int, seconds: float) -> dict[str, Any]:
    probe = Probe(server.url, PROBES)
    probe.start(seconds)
    wrk = run_wrk(
        f"{server.url}/v1/predict",
        server_pid=server.process.pid,
        connections=connections - PROBES,  # the probe's connections count in the total
        seconds=seconds,
        body_dir=body_dir,
        cpus=CLIENT_CPU,
        timeout_s=WRK_TIMEOUT_S,
        script=STATUS_SCRIPT,
    )
    probe.join(WRK_TIMEOUT_S + 10)
    return {"wrk": wrk, "probe": probe.summary(), "after": after_spike(server)}


def successes(run: dict[str, Any]) -> int:
    """200 answers of wrk and the probe together."""
    wrk: WrkResult = run["wrk"]
    return int(wrk.statuses.get("200", 0)) + int(run["probe"]["codes"].get("200", 0))


def row(connections: int, run: dict[str, Any], capacity: float) -> dict[str, Any]:
    wrk: WrkResult = run["wrk"]
    probe = run["probe"]
    codes = Counter(wrk.statuses)
    codes.update(probe["codes"])
    ok = successes(run)
    refused = sum(codes.get(str(s), 0) for s in REFUSED)
    seconds = wrk.seconds
    return {
        "connections": connections,
        "seconds": round(seconds, 2),
        "codes": dict(sorted(codes.items())),
        # connect/read/write errors seen by wrk, and transport errors seen by the probe
        "socket_errors": wrk.socket_errors + sum(v for k, v in codes.items() if not k.isdigit()),
        "timeouts": wrk.timeouts,
        "ok_per_s": round(ok / seconds, 1),
        "goodput_ratio": round(ok / seconds / capacity, 3) if capacity else None,
        "refused_per_s": round(refused / seconds, 1),
        "server_cpu_s": wrk.server_cpu_s,
        "wrk_p50_ms": wrk.p50_ms,
        "wrk_p99_ms": wrk.p99_ms,
        **{k: v for k, v in probe.items() if k != "codes"},
        "after_spike": run["after"],
    }


def summarise(connections: int, rows: list[dict[str, Any]], ok_cpu_s: float) -> dict[str, Any]:
    """One overload point over all rounds: median goodput, totals, the worst refusal p99."""
    mine = [r for r in rows if r["connections"] == connections]
    goodput = [r["goodput_ratio"] for r in mine]
    per_cpu = [r["ok_per_s"] * r["seconds"] / r["server_cpu_s"] * ok_cpu_s for r in mine]
    codes: Counter[str] = Counter()
    for r in mine:
        codes.update(r["codes"])
    steady = sorted(ms for r in mine for ms in r["steady_refusals_ms"])
    storm = sorted(ms for r in mine for ms in r["storm_refusals_ms"])

    def pooled(values: list[float]) -> dict[str, float | int | None]:
        def at(fraction: float) -> float | None:
            return round(percentile(values, fraction), 2) if values else None

        return {"n": len(values), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0)}

    return {
        "goodput": round(statistics.median(goodput), 3),
        "goodput_min": min(goodput),
        "goodput_max": max(goodput),
        "goodput_per_cpu_s": round(statistics.median(per_cpu), 3),
        "ok_per_s": round(statistics.median(r["ok_per_s"] for r in mine), 1),
        "codes": dict(sorted(codes.items())),
        "socket_errors": sum(r["socket_errors"] for r in mine),
        "timeouts": sum(r["timeouts"] for r in mine),
        "refusal_ms_after_storm": pooled(steady),  # all rounds
        "refusal_ms_in_storm": pooled(storm),
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Overload: {results['command']}",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, load "
        f"{results['machine']['load_average']} -> {results['machine']['load_average_after']}; "
        f"{results['machine']['pinning']}; file limit {results['file_limit']}.",
        f"Capacity (32 connections, in order): {results['capacity_runs_ok_per_s']} ok/s, "
        f"server CPU per success {results['cpu_us_per_success']} µs.",
        "",
        "| connections | goodput, median of rounds (min-max) | per CPU-s | ok/s "
        "| codes, all rounds | socket errors | timeouts "
        f"| refusal ms after the first {STORM_S:g} s, all rounds: p50 / p90 / **p99** / max (n) "
        f"| the same in the first {STORM_S:g} s (the storm) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def spread(p: dict[str, Any]) -> str:
        return f"{p['p50']} / {p['p90']} / **{p['p99']}** / {p['max']} ({p['n']})"

    for c, summary in results["summary"].items():
        lines.append(
            f"| {c} | **{summary['goodput']}x** ({summary['goodput_min']}-"
            f"{summary['goodput_max']}) | {summary['goodput_per_cpu_s']}x | {summary['ok_per_s']} "
            f"| {summary['codes']} | {summary['socket_errors']} | {summary['timeouts']} "
            f"| {spread(summary['refusal_ms_after_storm'])} "
            f"| {spread(summary['refusal_ms_in_storm'])} |"
        )
    lines += [
        "",
        "Every run, in order:",
        "",
        "| connections | codes | socket errors | timeouts | ok/s | goodput | refusal p50 / p99 ms "
        f"| after {STORM_S:g} s: p50 / p99 (n) | after the spike |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        after = r["after_spike"]
        lines.append(
            f"| {r['connections']} | {r['codes']} | {r['socket_errors']} | {r['timeouts']} | "
            f"{r['ok_per_s']} | {r['goodput_ratio']}x | {r['refusal_p50_ms']} / "
            f"{r['refusal_p99_ms']} | {r['steady_refusal_p50_ms']} / {r['steady_refusal_p99_ms']} "
            f"({r['steady_refusals_timed']}) | readyz {after['readyz']}, "
            f"predict {after['predict_statuses']} digit {after['digit']} "
            f"in {after['first_answers_ms']} ms |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.overload", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--connections", default="1024,4096", help="overload points")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--service-dir",
        type=Path,
        help="serve the `service` package of another checkout (before/after)",
    )
    parser.add_argument("--name", default="overload")
    parser.add_argument(
        "--env", action="append", default=[], help="MNIST_X=value for the server (repeatable)"
    )
    options = parser.parse_args(argv)
    stop_servers_on_sigterm()
    points = [int(c) for c in options.connections.split(",")]
    file_limit = raise_file_limit(2 * max(points) + 256)
    results: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.overload", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "file_limit": file_limit,
        "settings": {"seconds": options.seconds, "wrk_timeout_s": WRK_TIMEOUT_S, "probes": PROBES},
    }
    with tempfile.TemporaryDirectory(prefix="mnist-overload-") as scratch:
        work = Path(scratch)
        body_dir = write_bodies(work / "bodies")["png"].folder
        env = dict(item.split("=", 1) for item in options.env)
        server = start_server(
            "service",
            [],
            cpus=SERVER_CPU,
            env=env,
            log_dir=work / "logs",
            cwd=options.service_dir,
        )
        os.sched_setaffinity(0, {int(CLIENT_CPU)})  # the probe shares wrk's core, not the server's
        try:
            run_wrk(server.url + "/v1/predict", connections=32, seconds=2, body_dir=body_dir)
            base = [one_run(server, body_dir, 32, options.seconds)]
            rounds: list[dict[int, dict[str, Any]]] = []
            for _ in range(options.rounds):
                rounds.append({c: one_run(server, body_dir, c, options.seconds) for c in points})
                base.append(one_run(server, body_dir, 32, options.seconds))
        finally:
            server.stop()
    rates = [successes(r) / r["wrk"].seconds for r in base]
    ok_cpu_s = sum(r["wrk"].server_cpu_s for r in base) / max(1, sum(successes(r) for r in base))
    results["capacity_runs_ok_per_s"] = [round(rate, 1) for rate in rates]
    results["cpu_us_per_success"] = round(1e6 * ok_cpu_s, 1)
    results["runs"] = [row(32, base[0], rates[0])]
    for index, overloaded in enumerate(rounds):
        capacity = statistics.mean(rates[index : index + 2])  # the 32-runs around this round
        results["runs"] += [row(c, run, capacity) for c, run in overloaded.items()]
        results["runs"].append(row(32, base[index + 1], capacity))
    results["summary"] = {str(c): summarise(c, results["runs"], ok_cpu_s) for c in points}
    results["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    save_results(options.out, options.name, results, markdown(results))
    print(f"wrote {options.out / options.name}.json and .md")


if __name__ == "__main__":
    main()
