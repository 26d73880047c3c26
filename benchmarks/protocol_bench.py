"""Batch throughput of the inference protocol, in images per second, on ONE worker.

    python -m benchmarks.protocol_bench                 # ~3 min: 3 runs of 5 s per point
    python -m benchmarks.protocol_bench --reps 5 --max-batch-size 64 256
    python -m benchmarks.protocol_bench --alloc         # memory per request, in-process

What runs (the server pinned to core 1 with `taskset -c 1`, the client to core 0):
  1. v2 binary: the request body tritonclient builds for 256 UINT8 images
     (`binary_data=True`, outputs binary), wrk with 8 connections;
  2. v2 JSON tensors: the same 256 images as a JSON UINT8 tensor, JSON outputs;
  3. v1 batch binary: 256 images as raw `application/octet-stream` N x 28 x 28 bytes;
  4. v1 batch PNG: 64 PNG files as multipart (the decoding-bound path);
  5. gRPC ModelInfer, 256 UINT8 images per call as raw_input_contents (what
     tritonclient.grpc sends), 8 calls in flight from a grpc.aio client;
  6. raw onnxruntime in-process at the same batch sizes, one thread (the ceiling).
Each HTTP point reports images/s on the wall clock and server CPU microseconds
per image (process utime+stime over images answered), which holds on a shared
machine where wall-clock rates do not. The machine's load average is printed.

`--alloc` runs binary requests through the app in-process under tracemalloc and
prints the peak extra memory per request, in multiples of the body size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from benchmarks.server import ROOT, start_server, stop_servers_on_sigterm
from benchmarks.wrk import STATUS_LUA, run_wrk
from evaluation.samples import load_digits
from evaluation.uploads import build_pool, multipart

IMAGES = 256
PNG_IMAGES = 64
V2 = "/v2/models/mnist-mlp/infer"
V1_BATCH = "/v1/predict/batch"
SERVER_CPU, CLIENT_CPU = "1", "0"
VARIANTS = 8


def triton_binary_body(images: np.ndarray) -> tuple[bytes, int]:
    """The body tritonclient sends for UINT8 images with its defaults (binary in and out)."""
    import tritonclient.http as triton

    tensor = triton.InferInput("image_u8", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images, binary_data=True)
    body, json_length = triton.InferenceServerClient.generate_request_body([tensor])
    assert json_length is not None
    return body, json_length


def json_tensor_body(images: np.ndarray) -> bytes:
    tensor = {
        "name": "image_u8",
        "shape": list(images.shape),
        "datatype": "UINT8",
        "data": images.reshape(-1).tolist(),
    }
    return orjson.dumps({"inputs": [tensor]})


def write_set(folder: Path, bodies: Iterable[bytes], content_type: str, *headers: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for index, body in enumerate(bodies):
        (folder / f"{index}.body").write_bytes(body)
        count += 1
    (folder / "meta.txt").write_text("\n".join([f"{count} {content_type}", *headers]) + "\n")
    return folder


def body_sets(root: Path) -> dict[str, tuple[Path, str, int]]:
    """Scenario -> (body folder, path, images per request)."""
    digits, _ = load_digits()
    groups = [np.roll(digits, -k * 97, axis=0)[:IMAGES] for k in range(VARIANTS)]
    binary = [triton_binary_body(group) for group in groups]
    lengths = {length for _, length in binary}
    assert len(lengths) == 1, "every body must share the one Inference-Header-Content-Length"
    sets = {
        "v2-binary": (
            write_set(
                root / "v2-binary",
                (body for body, _ in binary),
                "-",
                f"Inference-Header-Content-Length: {lengths.pop()}",
            ),
            V2,
            IMAGES,
        ),
        "v2-json": (
            write_set(root / "v2-json", map(json_tensor_body, groups), "-"),
            V2,
            IMAGES,
        ),
        "v1-batch-octet": (
            write_set(
                root / "v1-batch-octet",
                (group.tobytes() for group in groups),
                "application/octet-stream",
            ),
            V1_BATCH,
            IMAGES,
        ),
    }
    pool = build_pool(PNG_IMAGES * VARIANTS, kinds=("png28",), seed=1)
    parts = [multipart("files", pool[k * PNG_IMAGES : (k + 1) * PNG_IMAGES]) for k in range(8)]
    sets["v1-batch-png"] = (
        write_set(root / "v1-batch-png", (body for body, _ in parts), parts[0][1]),
        V1_BATCH,
        PNG_IMAGES,
    )
    return sets


def ort_ceiling(batch_sizes: Iterable[int], seconds: float) -> dict[str, float]:
    """Raw onnxruntime images/s of the served variant, one intra-op thread, this core."""
    from service.config import Settings
    from service.model import OnnxModel, resolve_version_dir

    settings = Settings(model_repository=ROOT / "models", grpc_port=0)
    model = OnnxModel(
        resolve_version_dir(settings.model_repository, settings.model_name, None),
        intra_op_threads=1,
    )
    digits, _ = load_digits()
    rates: dict[str, float] = {}
    for size in batch_sizes:
        batch = np.resize(digits.reshape(-1, 784), (size, 784)).astype(np.float32)
        for _ in range(5):
            model.predict(batch)
        count, started, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - started < seconds:
            model.predict(batch)
            count += size
        rates[f"{size}_images_per_s"] = round(count / (time.perf_counter() - started), 1)
        rates[f"{size}_cpu_us_per_image"] = round(1e6 * (time.process_time() - cpu) / count, 2)
    return rates


async def _grpc_load(target: str, seconds: float, concurrency: int) -> dict[str, float]:
    """`concurrency` callers, each sending 256-image ModelInfer calls back to back."""
    import grpc

    from service.grpc.methods import InferenceStub
    from service.grpc.protocol import grpc_predict_v2_pb2 as pb

    digits, _ = load_digits()
    requests = []
    for k in range(VARIANTS):
        images = np.roll(digits, -k * 97, axis=0)[:IMAGES]
        request = pb.ModelInferRequest(model_name="mnist-mlp")
        request.raw_input_contents.append(images.tobytes())
        request.inputs.add(name="image_u8", datatype="UINT8", shape=list(images.shape))
        requests.append(request)
    latencies: list[float] = []
    failures = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = InferenceStub(channel)
        await stub.ModelInfer(requests[0], timeout=30)  # warm: connection open

        async def caller(index: int) -> None:
            nonlocal failures
            k = index
            while time.perf_counter() < stop:
                started = time.perf_counter()
                try:
                    await stub.ModelInfer(requests[k % VARIANTS], timeout=30)
                    latencies.append(time.perf_counter() - started)
                except grpc.aio.AioRpcError:
                    failures += 1
                k += 1

        began = time.perf_counter()
        stop = began + seconds
        await asyncio.gather(*(caller(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "calls": len(latencies),
        "errors": failures,
        "seconds": elapsed,
        "p50_ms": 1000 * ordered[len(ordered) // 2] if ordered else 0.0,
        "p99_ms": 1000 * ordered[int(len(ordered) * 0.99)] if ordered else 0.0,
    }


def grpc_point(args: argparse.Namespace, root: Path, batch_size: int) -> dict[str, Any]:
    """One server with gRPC on a free port; the client in its own process on core 0."""
    from benchmarks.wrk import process_tree_cpu_s
    from evaluation.live_server import free_port

    grpc_port = free_port()
    server = start_server(
        f"grpc-bs{batch_size}",
        ["--max-batch-size", str(batch_size), "--grpc-port", str(grpc_port)],
        cpus=SERVER_CPU,
        log_dir=root / "logs",
    )
    target = f"127.0.0.1:{grpc_port}"
    client = ["taskset", "-c", CLIENT_CPU, sys.executable, "-m", "benchmarks.protocol_bench"]
    common = ["--grpc-client", target, "--connections", str(args.connections)]
    try:
        subprocess.run([*client, *common, "--seconds", "1"], check=True, capture_output=True)
        cpu_before = process_tree_cpu_s(server.process.pid)
        done = subprocess.run(
            [*client, *common, "--seconds", str(args.seconds)],
            check=True,
            capture_output=True,
            text=True,
            timeout=args.seconds + 120,
        )
        cpu_used = process_tree_cpu_s(server.process.pid) - cpu_before
    finally:
        server.stop()
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    answered = result["calls"] * IMAGES
    point = {
        "scenario": "grpc-raw",
        "max_batch_size": batch_size,
        "images_per_request": IMAGES,
        "images_per_s": round(answered / result["seconds"], 1),
        "server_cpu_us_per_image": round(1e6 * cpu_used / answered, 2) if answered else None,
        "images_per_cpu_s": round(answered / cpu_used, 1) if cpu_used else None,
        "p50_ms": round(result["p50_ms"], 3),
        "p99_ms": round(result["p99_ms"], 3),
        "errors": result["errors"],
    }
    print(orjson.dumps(point).decode(), flush=True)
    return point


def http_points(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    sets = body_sets(root / "bodies")
    points = []
    for batch_size in args.max_batch_size:
        server = start_server(
            f"bs{batch_size}",
            ["--max-batch-size", str(batch_size)],
            cpus=SERVER_CPU,
            log_dir=root / "logs",
        )
        try:
            for name in args.scenarios:
                folder, path, images = sets[name]
                run_wrk(  # warm-up: connections open, caches and allocator settled
                    server.url + path,
                    connections=args.connections,
                    seconds=1,
                    body_dir=folder,
                    cpus=CLIENT_CPU,
                )
                runs = [
                    run_wrk(
                        server.url + path,
                        server_pid=server.process.pid,
                        connections=args.connections,
                        seconds=args.seconds,
                        body_dir=folder,
                        cpus=CLIENT_CPU,
                        script=STATUS_LUA,
                    )
                    for _ in range(args.reps)
                ]
                # The median run by rate: other jobs on a shared machine make single runs noisy.
                result = sorted(runs, key=lambda run: run.rps)[len(runs) // 2]
                answered = result.ok * images
                point = {
                    "scenario": name,
                    "max_batch_size": batch_size,
                    "images_per_request": images,
                    "images_per_s": round(result.rps * images, 1),
                    "server_cpu_us_per_image": round(1e6 * result.server_cpu_s / answered, 2)
                    if answered
                    else None,
                    "images_per_cpu_s": round(answered / result.server_cpu_s, 1)
                    if result.server_cpu_s
                    else None,
                    "p50_ms": result.p50_ms,
                    "p99_ms": result.p99_ms,
                    "errors": result.errors,
                    "statuses": result.statuses,
                    "socket_errors": result.socket_errors,
                    "reps_images_per_s": [round(run.rps * images) for run in runs],
                }
                points.append(point)
                print(orjson.dumps(point).decode(), flush=True)
        finally:
            server.stop()
    return points


async def _alloc_run(requests: int) -> dict[str, float]:
    """Binary requests through the real app in-process; peak extra memory per request."""
    from service.app import create_app
    from service.config import Settings

    digits, _ = load_digits()
    body, json_length = triton_binary_body(digits[:IMAGES])
    app = create_app(Settings(model_repository=ROOT / "models", access_log=False, grpc_port=0))
    chunk = 65536  # about what uvicorn hands over per read of a large body
    scope = {
        "type": "http",
        "method": "POST",
        "path": V2,
        "raw_path": V2.encode(),
        "query_string": b"",
        "headers": [
            (b"inference-header-content-length", str(json_length).encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
    }

    async def call() -> int:
        pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
        status = 0

        async def receive() -> dict[str, Any]:
            piece = pieces.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(dict(scope), receive, send)
        return status

    async with app.fastapi.router.lifespan_context(app.fastapi):
        for _ in range(20):
            assert await call() == 200
        tracemalloc.start()
        peaks = []
        for _ in range(requests):
            base, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            assert await call() == 200
            peaks.append(tracemalloc.get_traced_memory()[1] - base)
        tracemalloc.stop()
    peak = float(np.median(peaks))
    return {
        "body_bytes": len(body),
        "requests": requests,
        "peak_extra_bytes_per_request": peak,
        "peak_in_body_sizes": round(peak / len(body), 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run")
    parser.add_argument("--reps", type=int, default=3, help="runs per HTTP point; median quoted")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--max-batch-size", type=int, nargs="+", default=[64])
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=["v2-binary", "v2-json", "v1-batch-octet", "v1-batch-png"],
    )
    parser.add_argument("--alloc", action="store_true", help="only the in-process memory run")
    parser.add_argument("--no-grpc", action="store_true", help="skip the gRPC point")
    parser.add_argument("--grpc-client", metavar="TARGET", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.grpc_client:  # the client side of the gRPC point, run on the client core
        result = asyncio.run(_grpc_load(args.grpc_client, args.seconds, args.connections))
        print(orjson.dumps(result).decode())
        return
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    stop_servers_on_sigterm()
    print(f"load average before: {os.getloadavg()}", flush=True)
    if args.alloc:
        print(orjson.dumps(asyncio.run(_alloc_run(200))).decode())
        return
    with tempfile.TemporaryDirectory(prefix="protocol-bench-") as tmp:
        http_points(args, Path(tmp))
        if not args.no_grpc:
            for batch_size in args.max_batch_size:
                grpc_point(args, Path(tmp), batch_size)
    os.sched_setaffinity(0, {int(SERVER_CPU)})  # the core the server had
    ceiling = ort_ceiling(sorted({64, IMAGES, *args.max_batch_size}), min(args.seconds, 5.0))
    print(orjson.dumps({"scenario": "onnxruntime", "images_per_s": ceiling}).decode())
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
