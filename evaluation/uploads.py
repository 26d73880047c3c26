"""A labelled pool of request bodies for load tests: real MNIST digits re-rendered
as the files people upload (PNG and JPEG, several sizes, both polarities, colour
ink, canvas-style alpha), so the service decodes varied images, not one cached file.

Used by the Locust suite (`tests/load/locustfile.py`) and the wrk benchmark
(`benchmarks/`). The drawing itself is `evaluation.render`'s, shared with the
field benchmark and the preprocessing benchmark. No gevent, no torch.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from evaluation.render import alpha_canvas, encode
from evaluation.samples import load_digits

# How the digits are rendered; the name is kept on each item for per-kind accuracy.
KINDS = ("png28", "png-paper", "png-canvas", "jpeg-photo", "png-colour")


@dataclass(frozen=True)
class Item:
    """One labelled image: its encoded file and the digit a correct service answers."""

    label: int
    kind: str
    body: bytes
    content_type: str
    pixels: tuple[tuple[int, ...], ...]  # the original 28x28 MNIST digit, white on black

    @property
    def b64(self) -> str:
        return base64.b64encode(self.body).decode()

    @property
    def filename(self) -> str:
        return "digit.jpg" if self.content_type == "image/jpeg" else "digit.png"


def _on_paper(digit: np.ndarray, size: int, margin: float, rng: random.Random) -> Image.Image:
    """Dark ink on light paper, `size` px square, with a margin around the digit (grey)."""
    ink = Image.fromarray(255 - digit).resize(
        (round(size * (1 - 2 * margin)),) * 2, Image.Resampling.BICUBIC
    )
    paper = Image.new("L", (size, size), 255)
    paper.paste(ink, (round(size * margin),) * 2)
    level = rng.randint(200, 245)  # not pure white: real paper under real light
    array = np.asarray(paper, dtype=np.float32) / 255.0 * level
    return Image.fromarray(array.clip(0, 255).astype(np.uint8))


def render(digit: np.ndarray, kind: str, rng: random.Random) -> tuple[bytes, str]:
    """Encode one 28x28 white-on-black digit as a file of the given kind."""
    if kind == "png28":  # already MNIST-style: the service's fast path
        return encode(Image.fromarray(digit), "PNG", compress_level=3), "image/png"
    if kind == "png-paper":
        size = rng.choice((56, 96, 160))
        return encode(_on_paper(digit, size, 0.12, rng), "PNG", compress_level=3), "image/png"
    if kind == "png-canvas":  # a browser canvas: black strokes living only in alpha
        canvas = alpha_canvas(digit, rng.choice((140, 200, 280)))
        return encode(canvas, "PNG", compress_level=3), "image/png"
    if kind == "jpeg-photo":
        size = rng.choice((64, 128, 256))
        page = _on_paper(digit, size, 0.15, rng).convert("RGB")
        return encode(page, "JPEG", quality=rng.randint(75, 92)), "image/jpeg"
    if kind == "png-colour":  # blue or red pen on white
        size = rng.choice((48, 84))
        ink = (
            np.asarray(
                Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC), np.float32
            )[..., np.newaxis]
            / 255.0
        )
        colour = np.array(rng.choice(((20, 40, 160), (170, 20, 30))), np.float32)
        rgb = (1 - ink) * 250 + ink * colour
        return encode(Image.fromarray(rgb.astype(np.uint8), "RGB"), "PNG", compress_level=3), (
            "image/png"
        )
    raise ValueError(f"unknown kind {kind!r}; known: {KINDS}")


def build_pool(
    size: int = 300,
    *,
    kinds: Sequence[str] = KINDS,
    seed: int = 0,
    data_dir: Path | None = None,
    label_offset: int = 0,
) -> list[Item]:
    """`size` labelled images, digits and renderings drawn at random (seeded).

    `label_offset` shifts every label (mod 10): a deliberately WRONG pool, which
    a correct service must fail, to prove the accuracy check has teeth."""
    images, labels = load_digits(data_dir)
    rng = random.Random(seed)
    pool = []
    for _ in range(size):
        index = rng.randrange(len(images))
        kind = rng.choice(list(kinds))
        body, content_type = render(images[index], kind, rng)
        pixels = tuple(map(tuple, images[index].tolist()))
        label = (int(labels[index]) + label_offset) % 10
        pool.append(Item(label, kind, body, content_type, pixels))
    return pool


BOUNDARY = "mnist-load-boundary-7d1f0c"


def multipart(field: str, items: Sequence[Item]) -> tuple[bytes, str]:
    """A multipart/form-data body with one file part per item (all under `field`)."""
    parts = []
    for item in items:
        head = (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{item.filename}"\r\n'
            f"Content-Type: {item.content_type}\r\n\r\n"
        )
        parts.append(head.encode() + item.body + b"\r\n")
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    return body, f"multipart/form-data; boundary={BOUNDARY}"
