"""What the micro-batcher adds at low load (1 client), measured in-process without HTTP.

    taskset -c 1 python -m benchmarks.batcher_latency [--requests 2000]

One client sends single-image requests one after another (the next only after
the answer), which is the "concurrency 1" case of the speed goal. Compared:
  direct      `OnnxModel.predict(row)` called inline: the model alone
  unbatched   `MicroBatcher(merge_requests=False)`: the same call through the inference thread
  batched-Xms `MicroBatcher.submit` with max_queue_delay X ms (the service path)
Rounds alternate the variants so drift (a shared CPU) hits all alike. Prints JSON
with the p50/p90/p99 of each and the batcher's added p50 over `direct`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import numpy as np
import orjson

from benchmarks.server import SERVED_VERSION_DIR
from evaluation.samples import load_digits
from service.batching import MicroBatcher
from service.model import OnnxModel


def percentiles(samples: list[float]) -> dict[str, float]:
    values = np.asarray(samples) * 1e6
    return {
        "p50_us": round(float(np.percentile(values, 50)), 1),
        "p90_us": round(float(np.percentile(values, 90)), 1),
        "p99_us": round(float(np.percentile(values, 99)), 1),
    }


async def measure(
    requests: int, rounds: int, delays_ms: list[float], threads: int
) -> dict[str, object]:
    model = OnnxModel(SERVED_VERSION_DIR, intra_op_threads=threads)
    model.warm_up(64)
    digits, _ = load_digits()
    rows = [d.reshape(1, 784).astype(np.float32) for d in digits[:256]]

    runners: dict[str, Callable[[np.ndarray], Awaitable[np.ndarray]]] = {}

    async def direct(row: np.ndarray) -> np.ndarray:
        return model.predict(row)

    runners["direct"] = direct
    unbatched = MicroBatcher(
        model.predict,
        max_batch_size=1,
        max_queue_delay_s=0.0,
        max_queue_rows=2048,
        merge_requests=False,
    )
    await unbatched.start()
    runners["unbatched"] = unbatched.submit
    batchers = []
    for delay in delays_ms:
        batcher = MicroBatcher(
            model.predict, max_batch_size=64, max_queue_delay_s=delay / 1000, max_queue_rows=2048
        )
        await batcher.start()
        batchers.append(batcher)
        runners[f"batched-{delay:g}ms"] = batcher.submit

    samples: dict[str, list[float]] = {name: [] for name in runners}
    per_round = max(requests // rounds, 1)
    for round_index in range(rounds):
        for name, submit in runners.items():
            for i in range(per_round):
                row = rows[(round_index * per_round + i) % len(rows)]
                started = time.perf_counter()
                await submit(row)
                samples[name].append(time.perf_counter() - started)
    for batcher in batchers:
        await batcher.stop()
    await unbatched.stop()

    result: dict[str, object] = {name: percentiles(values) for name, values in samples.items()}
    base = statistics.median(samples["direct"])
    hop = statistics.median(samples["unbatched"])
    result["added_p50_us_over_direct"] = {
        name: round((statistics.median(values) - base) * 1e6, 1)
        for name, values in samples.items()
        if name != "direct"
    }
    result["added_p50_us_over_unbatched"] = {
        name: round((statistics.median(values) - hop) * 1e6, 1)
        for name, values in samples.items()
        if name.startswith("batched")
    }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="Requests per variant")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--delays-ms", default="0,0.5,1,2", help="max_queue_delay values to try")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads")
    options = parser.parse_args(argv)
    delays = [float(d) for d in options.delays_ms.split(",")]
    import uvloop

    result = uvloop.run(measure(options.requests, options.rounds, delays, options.threads))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
