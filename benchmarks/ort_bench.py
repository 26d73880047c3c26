"""Raw onnxruntime throughput of the served model, in-process: the physical limit.

    taskset -c 1 python -m benchmarks.ort_bench --threads 1 --variant fp32
    python -m benchmarks.ort_bench --threads 2 --variant int8 --spinning

Same session options as the service (`service/model.py`): sequential execution,
inter-op 1, intra-op `--threads`, spinning off unless `--spinning`. Input: real
MNIST digits tiled to each batch size. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

from benchmarks.server import SERVED_VERSION_DIR
from evaluation.samples import load_digits

BATCHES = (1, 8, 32, 64, 128, 512)


def model_file(version_dir: Path, variant: str) -> Path:
    card = orjson.loads((version_dir / "model.json").read_bytes())
    if variant == "fp32":
        return version_dir / str(card["file"])
    return version_dir / str(card["variants"][variant]["file"])


def session(path: Path, threads: int, spinning: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def measure(run: Any, batch: np.ndarray, seconds: float, reps: int) -> dict[str, float]:
    """Median over `reps` windows of images/s, plus the median single-call latency."""
    for _ in range(3):
        run(batch)
    rates, calls = [], []
    for _ in range(reps):
        count, started = 0, time.perf_counter()
        while (now := time.perf_counter()) - started < seconds:
            run(batch)
            calls.append(time.perf_counter() - now)
            count += 1
        rates.append(count * len(batch) / (time.perf_counter() - started))
    return {
        "images_per_s": round(statistics.median(rates), 1),
        "call_p50_us": round(statistics.median(calls) * 1e6, 1),
        # batch / median call time: robust to other jobs stealing the core
        "images_per_s_p50": round(len(batch) / statistics.median(calls), 1),
        "call_p99_us": round(float(np.percentile(calls, 99)) * 1e6, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version-dir", type=Path, default=SERVED_VERSION_DIR)
    parser.add_argument("--variant", default="fp32", help="fp32 (model.onnx) or a card variant")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads")
    parser.add_argument("--spinning", action="store_true", help="Let ORT threads spin-wait")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--seconds", type=float, default=0.5, help="Length of one window")
    parser.add_argument("--reps", type=int, default=3)
    options = parser.parse_args(argv)

    sess = session(
        model_file(options.version_dir, options.variant), options.threads, options.spinning
    )
    name = sess.get_inputs()[0].name
    digits, _ = load_digits()
    rows = digits.reshape(len(digits), -1).astype(np.float32)

    def run(batch: np.ndarray) -> Any:
        return sess.run(["probabilities"], {name: batch})

    results = {}
    for size in (int(b) for b in options.batches.split(",")):
        batch = np.ascontiguousarray(np.resize(rows, (size, rows.shape[1])))
        results[str(size)] = measure(run, batch, options.seconds, options.reps)
    report = {
        "variant": options.variant,
        "threads": options.threads,
        "spinning": options.spinning,
        "batches": results,
    }
    sys.stdout.write(orjson.dumps(report).decode() + "\n")


if __name__ == "__main__":
    main()
