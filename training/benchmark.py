"""Raw onnxruntime throughput of a model file (no HTTP, no preprocessing).

    python -m training.benchmark models/mnist-mlp/1/model.onnx models/mnist-mlp/1/model.int8.onnx
    python -m training.benchmark --card models/mnist-mlp/1    # measure, store in model.json

For each file, batch size and intra-op thread count: images per second of
back-to-back `session.run` calls on a fixed random batch (median of several
timed rounds after a warm-up). This is the ceiling the service's batcher can
approach, not what it reaches end to end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def images_per_second(
    path: Path, batch: int, threads: int, seconds: float = 1.0, rounds: int = 3, spin: bool = True
) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spin:
        # Spinning workers win on an idle machine and lose badly on a shared one.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(0)
    # Sparse bright strokes like real digits; the values matter little to a dense MLP.
    pixels = (rng.random((batch, 784)) < 0.2).astype(np.float32) * 255.0
    for _ in range(20):
        sess.run(None, {name: pixels})
    rates = []
    for _ in range(rounds):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            sess.run(None, {name: pixels})
            calls += 1
        rates.append(calls * batch / elapsed)
    return statistics.median(rates)


def benchmark(
    paths: list[Path],
    batches: tuple[int, ...] = (64, 512),
    threads: tuple[int, ...] = (1, 2),
    spin: bool = True,
) -> dict[str, dict[str, float]]:
    """{file name: {"b64_t1": images/s, ...}}."""
    table: dict[str, dict[str, float]] = {}
    for path in paths:
        table[path.name] = {
            f"b{b}_t{t}": round(images_per_second(path, b, t, spin=spin))
            for b in batches
            for t in threads
        }
    return table


def update_card(version_dir: Path, table: dict[str, dict[str, float]], command: str) -> None:
    """Store a (re)measured table in the version's model.json; file hashes are untouched."""
    from datetime import UTC, datetime

    from service.model_card import read_card, write_card

    card = read_card(version_dir)
    extra = dict(card.model_extra or {})
    extra["benchmark"] = {
        "images_per_second": table,
        "command": command,
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "note": "raw session.run on a shared 2-core machine; bB_tT = batch B, T intra-op threads",
    }
    write_card(version_dir, card.model_copy(update=extra))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", type=Path, nargs="*", help="ONNX files")
    parser.add_argument("--card", type=Path, help="a model version dir: its files, result stored")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-spin", action="store_true", help="ORT workers sleep, not spin")
    args = parser.parse_args(argv)
    models = list(args.models)
    if args.card:
        from service.model_card import read_card

        card = read_card(args.card)
        models += [args.card / card.file] + [args.card / v.file for v in card.variants.values()]
    if not models:
        parser.error("give ONNX files or --card")
    table = benchmark(models, tuple(args.batches), tuple(args.threads), spin=not args.no_spin)
    for name, row in table.items():
        cells = "  ".join(f"{k}={v:>9,.0f}/s" for k, v in row.items())
        print(f"{name:24s} {cells}")
    if args.card:
        used = sys.argv[1:] if argv is None else argv
        update_card(args.card, table, "python -m training.benchmark " + " ".join(used))


if __name__ == "__main__":
    main()
