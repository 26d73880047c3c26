"""Markdown tables and PNG plots from a `benchmarks.run` result."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib
import orjson

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HEADLINE_CONCURRENCY = "32"


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def versus_table(versus: dict[str, Any]) -> str:
    """The headline: the service and the plain app on the same bodies."""
    lines = [
        "| body | conc. | mnist-serve req/s | plain app req/s | ratio | ratio per CPU-s "
        "| p99 ms mnist-serve | p99 ms plain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for data in versus.values():
        for c, row in data["by_concurrency"].items():
            lines.append(
                f"| {data['label']} | {c} | {_rate(row['rps'])} | {_rate(row['plain_rps'])} | "
                f"**{row['ratio']:.2f}x** | {row['per_cpu_ratio']:.2f}x | {row['p99_ms']:.1f} | "
                f"{row['plain_p99_ms']:.1f} |"
            )
    return "\n".join(lines)


def http_table(http: dict[str, Any]) -> str:
    lines = [
        "| scenario | server | conc. | req/s | req/CPU-s | images/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for data in http.values():
        for c, point in data["by_concurrency"].items():
            median = point["median"]
            errors = sum(run["errors"] for run in point["runs"])
            images = _rate(median["images_per_s"]) if data["images_per_request"] else "-"
            lines.append(
                f"| {data['label']} | {data['server']} | {c} | {_rate(median['rps'])} | "
                f"{_rate(median['per_cpu_s'])} | {images} | {median['p50_ms']:.2f} | "
                f"{median['p99_ms']:.2f} | {errors} |"
            )
    return "\n".join(lines)


def accuracy_table(gate: dict[str, Any], http: dict[str, Any]) -> str:
    lines = ["| body | server | accuracy | images |", "|---|---|---:|---:|"]
    for name, row in gate.items():
        data = http.get(name, {})
        lines.append(
            f"| {data.get('label', name)} | {data.get('server', '')} | "
            f"{row['accuracy']:.1%} | {row['images']} |"
        )
    return "\n".join(lines)


def ort_table(ort: list[dict[str, Any]]) -> str:
    sizes = list(ort[0]["batches"])
    lines = [
        "| variant | threads | " + " | ".join(f"b={s}" for s in sizes) + " |",
        "|---|---:|" + "---:|" * len(sizes),
    ]
    for row in ort:
        cells = " | ".join(_rate(row["batches"][s]["images_per_s"]) for s in sizes)
        lines.append(f"| {row['variant']} | {row['threads']} | {cells} |")
    return "\n".join(lines)


def histogram_table(histograms: dict[str, Any]) -> str:
    lines = []
    for name, by_c in histograms.items():
        buckets = _buckets(by_c)
        lines.append(f"**{name}** (onnxruntime calls per batch-size bucket, all reps):")
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


def plot(results: dict[str, Any], folder: Path, stem: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    versus = results.get("versus_plain", {})
    paths: list[Path] = []
    if versus:
        labels = [data["label"] for data in versus.values()]
        rows = [data["by_concurrency"].get(HEADLINE_CONCURRENCY) for data in versus.values()]
        if all(rows):
            fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
            xs = range(len(labels))
            left.bar([x - 0.2 for x in xs], [r["rps"] for r in rows], 0.4, label="mnist-serve")
            left.bar([x + 0.2 for x in xs], [r["plain_rps"] for r in rows], 0.4, label="plain app")
            left.set_xticks(list(xs), labels, rotation=15, fontsize=8)
            left.set(
                ylabel="requests/s",
                yscale="log",
                title=f"1 worker on 1 core, {HEADLINE_CONCURRENCY} connections",
            )
            left.legend()
            right.bar([x - 0.2 for x in xs], [r["p99_ms"] for r in rows], 0.4, label="mnist-serve")
            right.bar([x + 0.2 for x in xs], [r["plain_p99_ms"] for r in rows], 0.4, label="plain")
            right.set_xticks(list(xs), labels, rotation=15, fontsize=8)
            right.set(ylabel="p99 latency (ms)", yscale="log", title="p99 latency, same load")
            right.legend()
            fig.tight_layout()
            paths.append(folder / f"{stem}-versus-plain.png")
            fig.savefig(paths[-1], dpi=110)
            plt.close(fig)
    histograms = results.get("batch_size_histograms", {})
    if "png" in histograms:
        by_c = histograms["png"]
        buckets = _buckets(by_c)
        fig, axis = plt.subplots(figsize=(7, 4))
        width = 0.8 / len(by_c)
        for index, (c, counts) in enumerate(by_c.items()):
            total = sum(counts[b] for b in buckets) or 1.0
            axis.bar(
                [i + index * width for i in range(len(buckets))],
                [counts[b] / total for b in buckets],
                width,
                label=f"c={c} (mean {counts['rows'] / max(counts['calls'], 1):.1f} rows)",
            )
        axis.set_xticks(
            [i + 0.4 - width / 2 for i in range(len(buckets))], [f"≤{b}" for b in buckets]
        )
        axis.set(
            xlabel="rows per onnxruntime call",
            ylabel="share of calls",
            title="Batch sizes formed, single 28x28 PNG requests",
        )
        axis.legend()
        fig.tight_layout()
        paths.append(folder / f"{stem}-batch-sizes.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_report(results: dict[str, Any], path: Path, plot_dir: Path, stem: str) -> str:
    machine = results["machine"]
    settings = results["settings"]
    plots = plot(results, plot_dir, stem)
    parts = [
        f"# Benchmark `{stem}`",
        "",
        f"{machine['date']}, {machine['cpu']}, {machine['cores']} cores, Python "
        f"{machine['python']}, commit {machine['git_commit']}; {machine['pinning']}; load "
        f"average {machine['load_average']} before, {machine.get('load_average_after')} after; "
        f"other busy processes: {machine['other_busy_processes'] or 'none'}.",
        f"{settings['seconds_per_point']:g} s per point, median of {settings['reps']} "
        f"interleaved runs; model file `{settings['model_file']}`.",
        "",
        "Servers: " + "; ".join(f"**{k}** `{v}`" for k, v in settings["servers"].items()) + ".",
        "",
        "## mnist-serve vs the plain FastAPI + onnxruntime app",
        "",
        versus_table(results.get("versus_plain", {})),
        "",
        "## Answers checked against the labels (before the load)",
        "",
        accuracy_table(results.get("accuracy_gate", {}), results["http"]),
        "",
        "## Every point",
        "",
        http_table(results["http"]),
        "",
    ]
    if results.get("batch_size_histograms"):
        parts += ["## Batches formed", "", histogram_table(results["batch_size_histograms"])]
    if results.get("ort"):
        parts += ["## Raw onnxruntime, images/s on one core", "", ort_table(results["ort"]), ""]
    extras = []
    if results.get("ready_s"):
        extras.append(
            f"- ready after start: median {statistics.median(results['ready_s']):.2f} s "
            f"of {results['ready_s']}"
        )
    if results.get("rss_mb"):
        extras.append(f"- resident memory after the load (MB): {results['rss_mb']}")
    latency = results.get("batcher_latency", {})
    if latency:
        extras.append(
            "- the batcher's added p50 at one client, in-process, over calling the model "
            f"directly: {latency.get('added_p50_us_over_direct')} µs"
        )
    if extras:
        parts += ["## Also measured", "", *extras, ""]
    if plots:
        parts += ["## Plots", ""]
        parts += [f"![{p.stem}](../../{p.relative_to(path.parents[2]).as_posix()})" for p in plots]
    text = "\n".join(parts) + "\n"
    path.write_text(text)
    return text


def save_results(folder: Path, name: str, results: dict[str, Any], markdown: str) -> None:
    """`<folder>/<name>.json` (every figure) and `.md` (the report), and the report printed."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    (folder / f"{name}.md").write_text(markdown)
    print(markdown)
