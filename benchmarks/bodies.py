"""Request bodies for wrk, written as files the Lua script loads (`wrk_bodies.lua`).

Each body set is a folder with `meta.txt` ("<count> <content-type>") and
`<i>.body` files: varied, labelled MNIST test digits, so servers decode
different images rather than one cached body. The same sets are posted to
mnist-serve and to the plain app it is compared with.
"""

from __future__ import annotations

import base64
import io
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from PIL import Image, ImageFilter

from evaluation.samples import load_digits
from evaluation.uploads import Item, build_pool, multipart

BATCH = 64  # images per batch request
VARIANTS = 32  # distinct bodies per set


@dataclass(frozen=True)
class BodySet:
    """A folder of bodies plus the labels of the images in each body (for the gate)."""

    folder: Path
    content_type: str
    labels: list[list[int]]


def _write(
    folder: Path, content_type: str, bodies: list[bytes], labels: list[list[int]]
) -> BodySet:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.txt").write_text(f"{len(bodies)} {content_type}\n")
    for index, body in enumerate(bodies):
        (folder / f"{index}.body").write_bytes(body)
    return BodySet(folder, content_type, labels)


def _encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def canvas_png(digit: np.ndarray) -> bytes:
    """What the draw-a-digit page sends: a 280x280 RGBA PNG, dark strokes on a
    transparent background (the ink lives in the alpha channel)."""
    strokes = Image.fromarray(digit).resize((200, 200), Image.Resampling.BICUBIC)
    alpha = Image.new("L", (280, 280))
    alpha.paste(strokes, (40, 40))
    canvas = Image.new("RGBA", (280, 280), (17, 24, 39, 0))
    canvas.putalpha(alpha)
    return _encode(canvas, "PNG")


def phone_jpeg(digit: np.ndarray, rng: random.Random) -> bytes:
    """A 1000x1000 phone-style photo: grey-blue pen on off-white paper, a lighting
    gradient, sensor noise and JPEG at quality 90 (about 140 KB)."""
    size, side = 1000, rng.randint(380, 520)
    ink = np.asarray(
        Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), np.float32
    )
    field = np.zeros((size, size), np.float32)
    top, left = rng.randint(150, size - side - 150), rng.randint(150, size - side - 150)
    field[top : top + side, left : left + side] = ink / 255.0
    light = np.linspace(1.0, rng.uniform(0.72, 0.88), size, dtype=np.float32)[:, None]
    paper = np.array([236, 231, 220], np.float32) * light[..., None]
    pen = np.array([40, 48, 90], np.float32)
    pixels = paper * (1 - field[..., None]) + pen * field[..., None]
    soft = Image.fromarray(pixels.astype(np.uint8), "RGB").filter(ImageFilter.GaussianBlur(1.2))
    noise = np.random.default_rng(rng.randint(0, 2**31)).normal(0, 4, pixels.shape)
    photo = np.clip(np.asarray(soft, np.float32) + noise, 0, 255).astype(np.uint8)
    return _encode(Image.fromarray(photo, "RGB"), "JPEG", quality=90)


def _chunks(items: list[Item], size: int, count: int) -> list[list[Item]]:
    return [[items[(start * size + k) % len(items)] for k in range(size)] for start in range(count)]


def write_bodies(root: Path) -> dict[str, BodySet]:
    """Every body set the benchmark uses, by name."""
    mnist = build_pool(BATCH * 4, kinds=("png28",), seed=1)
    singles = mnist[:VARIANTS]
    single_labels = [[item.label] for item in singles]
    sets: dict[str, BodySet] = {}
    sets["png"] = _write(root / "png", "image/png", [i.body for i in singles], single_labels)
    sets["pixels"] = _write(
        root / "pixels",
        "application/json",
        [orjson.dumps({"pixels": i.pixels}) for i in singles],
        single_labels,
    )
    sets["base64"] = _write(
        root / "base64",
        "application/json",
        [orjson.dumps({"image": i.b64}) for i in singles],
        single_labels,
    )
    digits, labels = load_digits()
    rng = random.Random(3)
    picks = [rng.randrange(len(digits)) for _ in range(VARIANTS)]
    picked_labels = [[int(labels[i])] for i in picks]
    sets["canvas"] = _write(
        root / "canvas", "image/png", [canvas_png(digits[i]) for i in picks], picked_labels
    )
    sets["photo"] = _write(
        root / "photo", "image/jpeg", [phone_jpeg(digits[i], rng) for i in picks], picked_labels
    )

    groups = _chunks(mnist, BATCH, 8)
    batch_labels = [[i.label for i in group] for group in groups]
    bodies, content_type = [], ""
    for group in groups:
        body, content_type = multipart("files", group)
        bodies.append(body)
    sets["batch-multipart"] = _write(root / "batch-multipart", content_type, bodies, batch_labels)
    sets["batch-json"] = _write(
        root / "batch-json",
        "application/json",
        [orjson.dumps({"images": [base64.b64encode(i.body).decode() for i in g]}) for g in groups],
        batch_labels,
    )
    sets["batch-v2-uint8"] = _write(
        root / "batch-v2-uint8",
        "application/json",
        [
            orjson.dumps(
                {
                    "inputs": [
                        {
                            "name": "image_u8",
                            "shape": [BATCH, 28, 28],
                            "datatype": "UINT8",
                            "data": [i.pixels for i in group],
                        }
                    ]
                }
            )
            for group in groups
        ],
        batch_labels,
    )
    return sets
