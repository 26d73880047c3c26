"""Request bodies for wrk, written as files the Lua script loads (`wrk_bodies.lua`).

Each scenario gets a folder with `meta.txt` ("<count> <content-type>") and
`<i>.body` files: a varied, labelled set drawn from the load-test pool, so the
server decodes different images rather than one cached body.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from evaluation.uploads import Item, build_pool, multipart

BATCH = 64  # images per batch request (the speed goal's size)
VARIANTS = 32  # distinct bodies per scenario


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


def _chunks(items: list[Item], size: int, count: int) -> list[list[Item]]:
    return [[items[(start * size + k) % len(items)] for k in range(size)] for start in range(count)]


def write_bodies(root: Path) -> dict[str, BodySet]:
    """All body sets the benchmark uses, by scenario body name."""
    mnist = build_pool(BATCH * 4, kinds=("png28",), seed=1)
    real = build_pool(VARIANTS * 2, kinds=("png-paper", "png-canvas", "png-colour"), seed=2)
    sets: dict[str, BodySet] = {}

    singles = mnist[:VARIANTS]
    bodies, ctype = [], ""
    for item in singles:
        body, ctype = multipart("file", [item])
        bodies.append(body)
    sets["png"] = _write(root / "png", ctype, bodies, [[i.label] for i in singles])
    sets["png-raw"] = _write(
        root / "png-raw", "image/png", [i.body for i in singles], [[i.label] for i in singles]
    )
    bodies = []
    for item in real[:VARIANTS]:
        body, ctype = multipart("file", [item])
        bodies.append(body)
    sets["png-real"] = _write(
        root / "png-real", ctype, bodies, [[i.label] for i in real[:VARIANTS]]
    )
    sets["pixels"] = _write(
        root / "pixels",
        "application/json",
        [orjson.dumps({"pixels": i.pixels}) for i in singles],
        [[i.label] for i in singles],
    )

    groups = _chunks(mnist, BATCH, 8)
    labels = [[i.label for i in group] for group in groups]
    bodies = []
    for group in groups:
        body, ctype = multipart("files", group)
        bodies.append(body)
    sets["batch-multipart"] = _write(root / "batch-multipart", ctype, bodies, labels)
    sets["batch-json"] = _write(
        root / "batch-json",
        "application/json",
        [orjson.dumps({"images": [i.b64 for i in group]}) for group in groups],
        labels,
    )
    v2 = [
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
    ]
    sets["batch-v2-uint8"] = _write(root / "batch-v2-uint8", "application/json", v2, labels)
    return sets
