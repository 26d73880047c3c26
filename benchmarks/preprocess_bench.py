"""How long `service.preprocess.preprocess_image` takes per upload, by kind of upload.

    python -m benchmarks.preprocess_bench [--seconds 1.0] [--json]

Kinds (drawn by `evaluation.render`, the renderers the field benchmark uses):
an MNIST-style 28x28 PNG (the fast path: the batch endpoint's traffic), the
same digit inverted (28x28, the full pipeline), canvas PNGs as browsers send
them (280x280: strokes only in alpha as RGBA and as grey+alpha, and the
draw-a-digit page's opaque white sheet), a 1200x900 PNG scan, a 1000x1000
phone-style JPEG (lighting gradient, sensor noise, ~140 KB) and a 4032x3024
JPEG (12 MP). Each kind runs for about `--seconds` on 64 (big kinds: 8)
different digits; prints µs per image of the thread's own CPU time (honest on a
shared machine) and wall-clock, beside what the plain app a user would write
instead spends on the same file (`Image.open(...).convert("L").resize((28, 28))`).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from evaluation.render import alpha_canvas, encode, on_page, web_canvas
from evaluation.samples import load_sample
from service.preprocess import preprocess_image


def _photo_1000(digit: np.ndarray) -> bytes:
    page = on_page(digit, (1000, 1000), 0.4, light=0.3, noise=3.0, rng=np.random.default_rng(0))
    return encode(page, "JPEG", quality=90)


def _canvas_la(digit: np.ndarray) -> bytes:
    strokes = Image.fromarray(digit).resize((280, 280))
    return encode(Image.merge("LA", (Image.new("L", (280, 280)), strokes)), compress_level=6)


KINDS: dict[str, Callable[[np.ndarray], bytes]] = {
    "mnist_png_28": lambda d: encode(d, compress_level=6),
    "inverted_png_28": lambda d: encode(255 - d, compress_level=6),
    "canvas_la_png_280": _canvas_la,
    "canvas_rgba_png_280": lambda d: encode(alpha_canvas(d, 280), compress_level=6),
    "web_canvas_png_280": lambda d: encode(web_canvas(d, 280), compress_level=6),
    "scan_png_1200x900": lambda d: encode(on_page(d, (1200, 900), 0.6), compress_level=6),
    "photo_jpeg_1000": _photo_1000,
    "photo_jpeg_4032x3024": lambda d: encode(on_page(d, (4032, 3024), 0.5), "JPEG", quality=90),
}


def plain_app(data: bytes) -> None:
    """What the plain FastAPI + onnxruntime app does with an upload: decode, grey, resize."""
    Image.open(io.BytesIO(data)).convert("L").resize((28, 28))


def measure(
    files: list[bytes], seconds: float, call: Callable[[bytes], object] = preprocess_image
) -> tuple[float, float]:
    """(wall, CPU) µs per call: medians over rounds of one pass over `files` each.

    CPU time is this thread's own: on a shared, busy machine it stays honest when
    wall time does not (another job holding the core inflates wall time only).
    """
    wall: list[float] = []
    cpu: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(wall) < 3:
        started, started_cpu = time.perf_counter(), time.thread_time()
        for data in files:
            call(data)
        cpu.append((time.thread_time() - started_cpu) / len(files) * 1e6)
        wall.append((time.perf_counter() - started) / len(files) * 1e6)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per kind")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    digits = load_sample()[0][:64]
    results = {}
    if not args.json:
        print(f"{'kind':<22} {'CPU µs':>9} {'wall µs':>9} {'plain app CPU µs':>17}  file")
    for kind, make in KINDS.items():
        files = [make(d) for d in (digits if kind.endswith("_28") else digits[:8])]
        wall, cpu = measure(files, args.seconds)
        _, plain = measure(files, args.seconds / 2, plain_app)
        results[kind] = {"wall_us": round(wall, 1), "cpu_us": round(cpu, 1), "plain_cpu_us": plain}
        if not args.json:
            size = sum(map(len, files)) / len(files) / 1024
            print(f"{kind:<22} {cpu:>9.1f} {wall:>9.1f} {plain:>17.1f}  {size:.0f} KiB")
    if args.json:
        print(json.dumps({"preprocess_us_per_image": results}))


if __name__ == "__main__":
    main()
