"""Markdown tables, speed-goal verdicts and PNG plots from a `benchmarks.run` result."""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SINGLE = (
    "healthz",
    "png",
    "png-nobatch",
    "png-delay0",
    "pixels",
    "pixels-nobatch",
    "pixels-delay0",
    "png-real",
)
BATCHED = ("batch-multipart", "batch-json", "batch-v2-uint8")
DEFAULT_DELAY = "batched-1ms"  # the shipped max_queue_delay_ms


def _cell(point: dict[str, Any], key: str) -> str:
    rates = ("rps", "images_per_s", "per_cpu_s", "images_per_cpu_s")
    value = point["median"].get(key, 0.0)
    return f"{value:,.0f}" if key in rates else f"{value:.2f}"


def http_table(http: dict[str, Any]) -> str:
    lines = [
        "| scenario | conc. | req/s | req/CPU-s | images/s | images/CPU-s | p50 ms | p95 ms "
        "| p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, data in http.items():
        for c, point in data["by_concurrency"].items():
            errors: int | str = sum(run["errors"] for run in point["runs"])
            if errors and "non2xx" in point["runs"][0]:
                non2xx = sum(run["non2xx"] for run in point["runs"])
                timeouts = sum(run["timeouts"] for run in point["runs"])
                errors = f"{errors} ({non2xx} non-2xx, {timeouts} timeouts)"
            images = _cell(point, "images_per_s") if data["images_per_request"] else "-"
            images_cpu = _cell(point, "images_per_cpu_s") if data["images_per_request"] else "-"
            lines.append(
                f"| {data['label'] or name} | {c} | {_cell(point, 'rps')} | "
                f"{_cell(point, 'per_cpu_s')} | {images} | {images_cpu} | "
                f"{_cell(point, 'p50_ms')} | {_cell(point, 'p95_ms')} | {_cell(point, 'p99_ms')} "
                f"| {errors} |"
            )
    return "\n".join(lines)


def ort_table(ort: list[dict[str, Any]]) -> str:
    sizes = list(ort[0]["batches"])
    head = "| variant | threads | " + " | ".join(f"b={s}" for s in sizes) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(sizes)]
    for row in ort:
        cells = " | ".join(f"{row['batches'][s]['images_per_s']:,.0f}" for s in sizes)
        lines.append(f"| {row['variant']} | {row['threads']} | {cells} |")
    lines.append("")
    lines.append("Median per-call latency (µs), and images/s = batch size ÷ median call")
    lines.append("(less sensitive to other jobs stealing the core than the windowed rate):")
    lines.append("")
    lines.append(head)
    lines.append("|---|---:|" + "---:|" * len(sizes))
    for row in ort:
        cells = " | ".join(
            f"{row['batches'][s]['call_p50_us']:,.0f} µs<br>"
            f"{row['batches'][s].get('images_per_s_p50', 0):,.0f}/s"
            for s in sizes
        )
        lines.append(f"| {row['variant']} | {row['threads']} | {cells} |")
    return "\n".join(lines)


def ratio_table(ratios: dict[str, Any]) -> str:
    keys = list(next(iter(ratios.values())))
    lines = ["| conc. | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
    for c, row in ratios.items():
        lines.append(f"| {c} | " + " | ".join(f"{row[k]:.2f}" for k in keys) + " |")
    return "\n".join(lines)


def histogram_table(histograms: dict[str, Any]) -> str:
    lines = []
    for name, by_c in histograms.items():
        buckets = _buckets(by_c)
        lines.append(f"**{name}** (ORT calls per batch-size bucket, all reps):")
        lines.append("")
        lines.append("| conc. | " + " | ".join(f"≤{b}" for b in buckets) + " | mean rows |")
        lines.append("|---:|" + "---:|" * (len(buckets) + 1))
        for c, counts in by_c.items():
            lines.append(
                f"| {c} | "
                + " | ".join(f"{counts[b]:.0f}" for b in buckets)
                + f" | {counts['rows'] / max(counts['calls'], 1):.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


def _buckets(by_c: dict[str, dict[str, float]]) -> list[str]:
    return [b for b in next(iter(by_c.values())) if b not in ("rows", "calls", "inf")]


def goals(results: dict[str, Any]) -> list[str]:
    http, out = results["http"], []

    def median(name: str, c: str, key: str) -> float:
        value: float = http[name]["by_concurrency"][c]["median"].get(key, 0.0)
        return value

    def share(a: float, b: float) -> float:
        return a / b if b else 0.0

    concs = list(http["healthz"]["by_concurrency"])
    for png in ("png", "png-delay0"):
        if png not in http:
            continue
        shares = {c: share(median(png, c, "rps"), median("healthz", c, "rps")) for c in concs}
        per_cpu = {
            c: share(median(png, c, "per_cpu_s"), median("healthz", c, "per_cpu_s")) for c in concs
        }
        text = "wall: " + ", ".join(f"c={c} {v:.0%}" for c, v in shares.items())
        text += "; per CPU-s: " + ", ".join(f"c={c} {v:.0%}" for c, v in per_cpu.items())
        met = all(v >= 0.6 for v in shares.values())
        out.append(
            f"| single PNG ≥ 60% of /healthz req/s (1 worker, {png}) | {text} | "
            f"{'met' if met else 'MISSED'} |"
        )
    best_cpu = {
        name: max(median(name, c, "images_per_cpu_s") for c in concs)
        for name in BATCHED
        if name in http
    }
    best = {
        name: max(median(name, c, "images_per_s") for c in concs)
        for name in BATCHED
        if name in http
    }
    if best:
        text = ", ".join(f"{n}: {v:,.0f}/s ({best_cpu[n]:,.0f} per CPU-s)" for n, v in best.items())
        met = max(best.values()) >= 50_000
        out.append(
            f"| batch endpoint ≥ 50,000 images/s (1 worker, 64/request) | {text} | "
            f"{'met' if met else 'MISSED'} |"
        )
    pairs = [
        ("pixels", "pixels-nobatch"),
        ("png", "png-nobatch"),
        ("pixels-delay0", "pixels-nobatch"),
        ("png-delay0", "png-nobatch"),
    ]
    added = {
        a: median(a, "1", "p50_ms") - median(b, "1", "p50_ms")
        for a, b in pairs
        if a in http and b in http and "1" in http[a]["by_concurrency"]
    }
    latency = results.get("batcher_latency", {})
    inproc = latency.get("added_p50_us_over_direct", {}).get(DEFAULT_DELAY)
    parts = [f"HTTP {a} on−off {v * 1000:+.0f} µs" for a, v in added.items()]
    if inproc is not None:
        parts.append(f"in-process batcher(1 ms) − direct {inproc:+.0f} µs")
    if parts:
        worst = max([v * 1000 for v in added.values()] + ([inproc] if inproc is not None else []))
        out.append(
            f"| batcher adds ≤ 0.5 ms p50 at 1 client | {'; '.join(parts)} | "
            f"{'met' if worst <= 500 else 'MISSED'} |"
        )
    ready = results.get("ready_s", [])
    if ready:
        value = statistics.median(ready)
        out.append(
            f"| ready within 2 s | median {value:.2f} s of {ready} | "
            f"{'met' if value <= 2 else 'MISSED'} |"
        )
    rss = [
        mb for server in results.get("servers", {}).values() for mb in server["rss_after_load_mb"]
    ]
    if rss:
        out.append(
            f"| RSS per worker < 200 MB | max {max(rss):.0f} MB after load | "
            f"{'met' if max(rss) < 200 else 'MISSED'} |"
        )
    return ["| goal | measured | verdict |", "|---|---|---|", *out]


def plot(results: dict[str, Any], folder: Path, stem: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    http = results["http"]
    paths = []

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in SINGLE:
        if name in http:
            xs = [int(c) for c in http[name]["by_concurrency"]]
            ys = [p["median"]["rps"] for p in http[name]["by_concurrency"].values()]
            left.plot(xs, ys, marker="o", label=http[name]["label"] or name)
    left.set(
        xscale="log",
        xlabel="concurrent connections",
        ylabel="requests/s",
        title="Single requests, 1 worker on 1 core",
    )
    left.set_xticks(xs, [str(x) for x in xs])
    left.legend(fontsize=8)
    for name in BATCHED:
        if name in http:
            xs = [int(c) for c in http[name]["by_concurrency"]]
            ys = [p["median"]["images_per_s"] for p in http[name]["by_concurrency"].values()]
            right.plot(xs, ys, marker="o", label=http[name]["label"] or name)
    for row in results.get("ort", []):
        if row["threads"] == 1:
            right.axhline(
                row["batches"]["64"]["images_per_s"],
                linestyle="--",
                linewidth=1,
                color="grey" if row["variant"] == "fp32" else "black",
                label=f"raw ORT {row['variant']} b=64, 1 thread",
            )
    right.set(
        xscale="log",
        xlabel="concurrent connections",
        ylabel="images/s",
        title="Batch endpoint, 64 images/request",
    )
    right.set_xticks(xs, [str(x) for x in xs])
    right.legend(fontsize=8)
    fig.tight_layout()
    paths.append(folder / f"{stem}-throughput.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    shown = [n for n in ("healthz", "png", "png-nobatch", "batch-v2-uint8") if n in http]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 4), sharey=True)
    for axis, name in zip(axes, shown, strict=True):
        xs = [int(c) for c in http[name]["by_concurrency"]]
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            ys = [p["median"][key] for p in http[name]["by_concurrency"].values()]
            axis.plot(xs, ys, marker="o", label=key.split("_")[0])
        axis.set(
            xscale="log",
            yscale="log",
            xlabel="concurrent connections",
            title=http[name]["label"] or name,
        )
        axis.set_xticks(xs, [str(x) for x in xs])
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms)")
    axes[0].legend()
    fig.tight_layout()
    paths.append(folder / f"{stem}-latency.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    histograms = results.get("batch_size_histograms", {})
    shown = [n for n in ("png", "png-delay0", "pixels") if n in histograms]
    if shown:
        fig, axes = plt.subplots(1, len(shown), figsize=(6 * len(shown), 4), squeeze=False)
        for axis, name in zip(axes[0], shown, strict=True):
            by_c = histograms[name]
            buckets = _buckets(by_c)
            width = 0.8 / len(by_c)
            for index, (c, counts) in enumerate(by_c.items()):
                total = sum(counts[b] for b in buckets) or 1.0
                axis.bar(
                    [i + index * width for i in range(len(buckets))],
                    [counts[b] / total for b in buckets],
                    width,
                    label=f"c={c} (mean {counts['rows'] / max(counts['calls'], 1):.1f})",
                )
            axis.set_xticks(
                [i + 0.4 - width / 2 for i in range(len(buckets))], [f"≤{b}" for b in buckets]
            )
            axis.set(
                xlabel="rows per onnxruntime call",
                ylabel="share of calls",
                title=f"Batch sizes under load: {http[name]['label']}",
            )
            axis.legend()
        fig.tight_layout()
        paths.append(folder / f"{stem}-batch-sizes.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_report(results: dict[str, Any], path: Path, plot_dir: Path, stem: str) -> str:
    plots = plot(results, plot_dir, stem)
    machine = results["machine"]
    settings = results["settings"]
    sections = [
        f"## Results `{stem}` ({machine['date']}, commit {machine['git_commit']})",
        "",
        f"{machine['cpu']}, {machine['cores']} cores, Python {machine['python']}; "
        f"{machine['pinning']}; {settings['seconds_per_point']:g} s per point, "
        f"median of {settings['reps']}; load average before {machine['load_average']}, "
        f"after {machine.get('load_average_after')}.",
    ]
    if machine["other_cpu_jobs"]:
        sections += [
            "",
            "**CPU shared**: other jobs were running: "
            + "; ".join(f"`{j[:100]}`" for j in machine["other_cpu_jobs"]),
        ]
    sections += [
        "",
        "### Speed goals",
        "",
        *goals(results),
        "",
        "### HTTP (wrk)",
        "",
        http_table(results["http"]),
    ]
    if "ratios" in results:
        sections += ["", "### Ratios", "", ratio_table(results["ratios"])]
    if "ort" in results:
        sections += ["", "### Raw onnxruntime in-process (images/s)", "", ort_table(results["ort"])]
    if results.get("batcher_latency"):
        latency = results["batcher_latency"]
        rows = [k for k in latency if isinstance(latency[k], dict) and "p50_us" in latency[k]]
        sections += [
            "",
            "### Batcher latency at 1 client, in-process (µs)",
            "",
            "| path | p50 | p90 | p99 | added p50 vs direct |",
            "|---|---:|---:|---:|---:|",
        ]
        for name in rows:
            added = latency["added_p50_us_over_direct"].get(name, 0.0)
            sections.append(
                f"| {name} | {latency[name]['p50_us']:.0f} | "
                f"{latency[name]['p90_us']:.0f} | {latency[name]['p99_us']:.0f} | "
                f"{added:+.0f} |"
            )
    if results.get("batch_size_histograms"):
        sections += [
            "",
            "### Batch sizes under load (from /metrics)",
            "",
            histogram_table(results["batch_size_histograms"]),
        ]
    if "servers" in results:
        sections += ["", "### Start-up and memory", ""]
        sections.append(f"Time to ready (process start → /readyz 200): {results.get('ready_s')} s")
        for name, server in results["servers"].items():
            sections.append(
                f"- `{name}`: RSS idle {server['rss_idle_mb']} MB, after load "
                f"{server['rss_after_load_mb']} MB"
            )
    if "accuracy_gate" in results:
        gate = ", ".join(f"{k} {v['accuracy']:.1%}" for k, v in results["accuracy_gate"].items())
        sections += ["", f"Correctness gate (digits vs labels before the load): {gate}."]
    sections += ["", "### Plots", ""]
    for plot_path in plots:
        link = os.path.relpath(plot_path.resolve(), path.resolve().parent)
        sections += [f"![{plot_path.stem}]({link})", ""]
    text = "\n".join(sections)
    path.write_text(text)
    return text
