"""Build the model card (`model.json`) for an exported version directory.

The card is the contract the service checks at load time, so everything in it
is measured from the files actually written (sha256, size, graph I/O specs
read back from the ONNX file), never copied from intentions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnx

from service.model_card import ModelCard, TensorSpec, Variant, sha256_of, write_card

CLASSES = [str(c) for c in range(10)]
_ONNX_TO_OIP = {onnx.TensorProto.FLOAT: "FP32", onnx.TensorProto.INT64: "INT64"}


def tensor_specs(values: Any) -> list[TensorSpec]:
    """Specs of graph inputs/outputs; symbolic dims (the batch axis) become -1."""
    specs = []
    for value in values:
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        specs.append(
            TensorSpec(name=value.name, datatype=_ONNX_TO_OIP[tensor_type.elem_type], shape=dims)
        )
    return specs


def parse_version_dir(version_dir: Path) -> tuple[str, int]:
    """`models/<name>/<version>` -> (name, version); the version must be a positive int."""
    if not version_dir.name.isdigit() or int(version_dir.name) < 1:
        raise ValueError(f"{version_dir}: last path component must be a version number >= 1")
    return version_dir.parent.name, int(version_dir.name)


INT8_ACCURACY_TOLERANCE = 0.001  # serve int8 when it loses at most 0.1 point on MNIST test


def int8_is_as_accurate(fp32: dict[str, Any], int8: dict[str, Any] | None) -> bool:
    try:
        fp32_accuracy = float(fp32["mnist_test"]["accuracy"])
        int8_accuracy = float((int8 or {})["mnist_test"]["accuracy"])
    except (KeyError, TypeError, ValueError):
        return False
    return int8_accuracy >= fp32_accuracy - INT8_ACCURACY_TOLERANCE


def build_card(
    version_dir: Path,
    *,
    description: str,
    metrics: dict[str, Any],
    training: dict[str, Any],
    data: dict[str, Any],
    int8_metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> ModelCard:
    name, version = parse_version_dir(version_dir)
    onnx_path = version_dir / "model.onnx"
    graph = onnx.load(str(onnx_path)).graph
    variants: dict[str, Variant] = {}
    serving_variant: str | None = None
    int8_path = version_dir / "model.int8.onnx"
    if int8_path.exists():
        variants["int8"] = Variant(
            file=int8_path.name,
            sha256=sha256_of(int8_path),
            size_bytes=int8_path.stat().st_size,
            metrics=int8_metrics or {},
        )
        if int8_is_as_accurate(metrics, int8_metrics):
            serving_variant = "int8"  # several times faster on CPU at the same accuracy
    return ModelCard(
        name=name,
        version=version,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        description=description,
        file=onnx_path.name,
        sha256=sha256_of(onnx_path),
        size_bytes=onnx_path.stat().st_size,
        inputs=tensor_specs(graph.input),
        outputs=tensor_specs(graph.output),
        classes=CLASSES,
        metrics=metrics,
        training=training,
        data=data,
        variants=variants,
        serving_variant=serving_variant,
        **(extra or {}),
    )


def save_card(version_dir: Path, card: ModelCard) -> Path:
    return write_card(version_dir, card)
