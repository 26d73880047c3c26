"""The model card (`model.json`): the contract between training and serving.

Training writes it beside `model.onnx` (it may import this module; the service
never imports training). The service reads it at load time and checks the ONNX
file against it: sha256, input/output names, shapes and dtypes.

Model repository layout::

    models/<model-name>/<version>/model.onnx
    models/<model-name>/<version>/model.json
    models/<model-name>/<version>/model.int8.onnx   (optional quantized variant)

Versions are positive integers (like Triton's model repository); the newest is
the highest number.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CARD_FILENAME = "model.json"


class TensorSpec(BaseModel):
    """One graph input or output. `shape` uses -1 for the dynamic batch axis."""

    name: str
    datatype: str = Field(description="Open Inference Protocol datatype, e.g. FP32, INT64")
    shape: list[int]


class PixelConvention(BaseModel):
    """What the graph input expects, so a client can feed raw pixels correctly."""

    foreground: str = "white"
    background: str = "black"
    value_range: tuple[float, float] = (0.0, 255.0)
    layout: str = "28x28 row-major, flattened to 784"


class Variant(BaseModel):
    """Another file of the same model, e.g. an int8 dynamically quantized graph."""

    file: str
    sha256: str
    size_bytes: int
    metrics: dict[str, Any] = Field(default_factory=dict)


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str
    version: int = Field(ge=1)
    created: str = Field(description="ISO 8601 UTC time of export")
    description: str = ""
    file: str = "model.onnx"
    sha256: str = Field(description="sha256 of the ONNX file named by `file`")
    size_bytes: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    pixel_convention: PixelConvention = PixelConvention()
    classes: list[str]
    metrics: dict[str, Any] = Field(
        default_factory=dict,
        description="e.g. {'mnist_test': {'accuracy': ...}, 'field_benchmark': {'accuracy': ...}}",
    )
    training: dict[str, Any] = Field(
        default_factory=dict, description="config, command, duration, seed, torch version"
    )
    data: dict[str, Any] = Field(default_factory=dict, description="dataset files and md5s")
    variants: dict[str, Variant] = Field(default_factory=dict)
    serving_variant: str | None = Field(
        None,
        description="Variant the service loads by default (e.g. 'int8' when it is as accurate "
        "and faster); None serves `file`",
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(version_dir: Path) -> ModelCard:
    return ModelCard.model_validate_json((version_dir / CARD_FILENAME).read_text())


def write_card(version_dir: Path, card: ModelCard) -> Path:
    path = version_dir / CARD_FILENAME
    path.write_text(card.model_dump_json(indent=2) + "\n")
    return path
