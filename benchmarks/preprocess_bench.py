"""How long `service.preprocess.preprocess_image` takes per upload, by kind of upload.

    python -m benchmarks.preprocess_bench [--seconds 1.0] [--json]

Kinds: an MNIST-style 28x28 PNG (the fast path: the batch endpoint's traffic),
the same digit inverted (28x28, the full pipeline), a 280x280 alpha-only canvas
PNG (the web page), a 1200x900 PNG scan and a 4032x3024 phone-photo JPEG (12 MP).
Each kind runs for about `--seconds` on 64 (big kinds: 8) different digits;
prints µs per image, wall-clock and CPU (the thread's own time).
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

from evaluation.samples import load_sample
from service.preprocess import preprocess_image


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def on_page(digit: np.ndarray, size: tuple[int, int], fraction: float) -> Image.Image:
    """Dark ink on light paper, the digit `fraction` of the page height, centred."""
    width, height = size
    side = int(height * fraction)
    strokes = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC))
    page = np.full((height, width), 235, np.uint8)
    top, left = (height - side) // 2, (width - side) // 2
    page[top : top + side, left : left + side] = 235 - strokes * (215 / 255)
    return Image.fromarray(page).convert("RGB")


KINDS: dict[str, Callable[[np.ndarray], bytes]] = {
    "mnist_png_28": lambda d: encode(Image.fromarray(d), "PNG"),
    "inverted_png_28": lambda d: encode(Image.fromarray(255 - d), "PNG"),
    "canvas_rgba_png_280": lambda d: encode(
        Image.merge("LA", (Image.new("L", (280, 280)), Image.fromarray(d).resize((280, 280)))),
        "PNG",
    ),
    "scan_png_1200x900": lambda d: encode(on_page(d, (1200, 900), 0.6), "PNG"),
    "photo_jpeg_4032x3024": lambda d: encode(on_page(d, (4032, 3024), 0.5), "JPEG", quality=90),
}


def measure(files: list[bytes], seconds: float) -> tuple[float, float]:
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
            preprocess_image(data)
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
    for kind, make in KINDS.items():
        files = [make(d) for d in (digits if "28" in kind else digits[:8])]
        wall, cpu = measure(files, args.seconds)
        results[kind] = {"wall_us": round(wall, 1), "cpu_us": round(cpu, 1)}
        if not args.json:
            size = sum(map(len, files)) / len(files) / 1024
            print(f"{kind:<22} {wall:>9.1f} µs wall {cpu:>9.1f} µs CPU  ({size:.0f} KiB files)")
    if args.json:
        print(json.dumps({"preprocess_us_per_image": results}))


if __name__ == "__main__":
    main()
