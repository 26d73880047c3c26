"""Open Inference Protocol tensors, whatever carried them (HTTP JSON, HTTP binary, gRPC).

The model takes one image per row, through any ONE of these inputs (unique
names, listed in the model metadata):

- `pixels`   FP32  [N,784] (or [N,28,28], [N,1,28,28]): intensities 0..255,
  white digit on black (the model card's convention; 0..1 tensors are refused
  with a message, never silently misread);
- `image_u8` UINT8 [N,28,28] (or [N,784]): the same, as bytes;
- `image`    BYTES [N]: image files (PNG, JPEG, ...), preprocessed like /v1 uploads.

Outputs: `probabilities` FP32 [N,10] and `digit` INT64 [N].

A tensor's values arrive either as a JSON list or as raw little-endian bytes
(the binary extension, gRPC's `raw_input_contents`). Raw sizes are checked
against shape and datatype before a byte is read, and a raw numeric tensor
becomes a zero-copy `np.frombuffer` view: the batcher copies each image once,
into its float32 batch. Every pixel tensor passes `service.inputs.pixel_rows`,
the check /v1 uses too.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.api.parsing import Limits, check_item_count, decode_base64, decode_images
from service.errors import BadRequest, InvalidInput
from service.inputs import PIXELS, SIDE, pixel_rows
from service.model_card import ModelCard
from service.predictor import Predictions

PIXEL_INPUT, UINT8_INPUT, IMAGE_INPUT = "pixels", "image_u8", "image"
PROBABILITIES, DIGIT = "probabilities", "digit"
DTYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "UINT8": np.dtype("u1"),
    "INT64": np.dtype("<i8"),
}
_LENGTH = struct.Struct("<I")  # BYTES elements: a 4-byte little-endian length, then the bytes


def input_specs(card: ModelCard) -> dict[str, dict[str, Any]]:
    """The inputs the metadata lists, from the model card: the graph's float input (as
    `pixels`), its UINT8 and image-file forms, each with the pixel scale it takes."""
    (graph_input,) = card.inputs
    convention = card.pixel_convention
    low, high = convention.value_range
    scale = {
        "pixel_scale": f"{low:g}..{high:g}",
        "foreground": convention.foreground,
        "background": convention.background,
    }
    return {
        PIXEL_INPUT: {
            "datatype": graph_input.datatype,
            "shape": graph_input.shape,
            "parameters": scale,
        },
        UINT8_INPUT: {"datatype": "UINT8", "shape": [-1, SIDE, SIDE], "parameters": scale},
        IMAGE_INPUT: {
            "datatype": "BYTES",
            "shape": [-1],
            "parameters": {
                "content": "image files (PNG, JPEG, WebP, BMP, GIF, TIFF); base64 in JSON, "
                "raw bytes with the binary extension or gRPC"
            },
        },
    }


def output_specs(card: ModelCard) -> dict[str, dict[str, Any]]:
    """The outputs as served: the graph's probabilities and their argmax."""
    graph = {output.name: output for output in card.outputs}
    probabilities = graph[PROBABILITIES]
    return {
        PROBABILITIES: {"datatype": probabilities.datatype, "shape": probabilities.shape},
        DIGIT: {"datatype": "INT64", "shape": [-1]},
    }


# The names requests are checked against; the model card must agree (checked at load).
INPUT_TYPES = {PIXEL_INPUT: "FP32", UINT8_INPUT: "UINT8", IMAGE_INPUT: "BYTES"}
OUTPUT_TYPES = {PROBABILITIES: "FP32", DIGIT: "INT64"}


@dataclass(frozen=True)
class InputTensor:
    """One input tensor, its values in ONE of: JSON values (`data`), raw little-endian
    bytes (`raw`), a flat array (`array`: gRPC typed contents) or, for BYTES, the
    elements themselves (`elements`: gRPC `bytes_contents`)."""

    name: str
    datatype: str
    shape: list[int]
    data: Any = None
    raw: bytes | memoryview | None = None
    array: np.ndarray | None = None
    elements: list[bytes] | None = None


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool = False  # HTTP: answer this output as raw bytes after the JSON header


@dataclass(frozen=True)
class InferenceRequest:
    """What an infer call asks, whichever protocol brought it."""

    input: InputTensor
    outputs: list[RequestedOutput]
    id: str | None = None
    timeout_s: float | None = None  # the request's own deadline (Triton's `timeout`, µs)
    parameters: dict[str, Any] = field(default_factory=dict)


def check_outputs(names: list[str]) -> None:
    unknown = sorted(set(names) - set(OUTPUT_TYPES))
    if unknown:
        raise BadRequest(f"unknown outputs {unknown}; available: {list(OUTPUT_TYPES)}")


def check_input(tensor: InputTensor, limits: Limits) -> None:
    """Name, datatype and shape, before any value is looked at."""
    expected = INPUT_TYPES.get(tensor.name)
    if expected is None:
        raise BadRequest(
            f"unknown input '{tensor.name}'; this model takes one of {list(INPUT_TYPES)}"
        )
    if tensor.datatype != expected:
        what = " (image files)" if expected == "BYTES" else ""
        raise BadRequest(
            f"input '{tensor.name}' has datatype {expected}{what}, got {tensor.datatype}"
        )
    shape = tensor.shape
    if not shape or not all(isinstance(size, int) and size >= 0 for size in shape):
        raise BadRequest(f"input '{tensor.name}' shape {shape} must be non-negative integers")
    check_item_count(shape[0], limits)


def pixel_tensor_rows(tensor: InputTensor, limits: Limits) -> np.ndarray:
    """A numeric input tensor -> checked (n, 784) rows (a view of raw bytes, no copy)."""
    check_input(tensor, limits)
    name, shape = tensor.name, tensor.shape
    size = math.prod(shape)
    if len(shape) < 2 or size != shape[0] * PIXELS:
        raise BadRequest(
            f"input '{name}' shape {shape} not supported: use [N,784], [N,28,28] or [N,1,28,28]"
        )
    dtype = DTYPES[tensor.datatype]
    if tensor.raw is not None:
        expected = size * dtype.itemsize
        if len(tensor.raw) != expected:
            raise BadRequest(
                f"input '{name}' has {len(tensor.raw)} bytes of data but {tensor.datatype} "
                f"shape {shape} needs {expected}"
            )
        values = np.frombuffer(tensor.raw, dtype=dtype)
    elif tensor.array is not None:
        values = tensor.array
        if values.size != size:
            raise BadRequest(
                f"input '{name}' has {values.size} values but shape {shape} needs {size}"
            )
    else:
        values = json_values(tensor, size)
    try:
        return pixel_rows(values.reshape(shape))
    except InvalidInput as error:  # the protocol answers every malformed tensor with 400
        raise BadRequest(f"input '{name}': {error.message}") from None


def json_values(tensor: InputTensor, size: int) -> np.ndarray:
    """JSON numbers -> a flat array of the tensor's datatype, checked for what JSON allows
    but the datatype does not (fractions or out-of-range values for UINT8)."""
    name, datatype = tensor.name, tensor.datatype
    if not isinstance(tensor.data, list):
        raise BadRequest(f"input '{name}' data must be a list of {datatype} numbers")
    is_u8 = datatype == "UINT8"
    try:
        values = np.asarray(tensor.data, dtype=np.float64 if is_u8 else DTYPES[datatype])
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(f"input '{name}' data must be {datatype} numbers") from None
    values = values.reshape(-1)
    if values.size != size:
        raise BadRequest(
            f"input '{name}' has {values.size} values but shape {tensor.shape} needs {size}"
        )
    if is_u8:
        if not (np.isfinite(values).all() and (values == np.round(values)).all()):
            raise BadRequest(f"input '{name}' is UINT8 but holds fractions")
        if values.size and (values.min() < 0 or values.max() > 255):
            raise BadRequest(f"input '{name}' is UINT8: values must be 0..255")
        values = values.astype(np.uint8)
    return values


def split_bytes_elements(raw: bytes | memoryview, count: int, name: str) -> list[bytes]:
    """Raw BYTES tensor data: `count` elements, each a 4-byte little-endian length and
    that many bytes, filling `raw` exactly; nothing is read past its end."""
    view = memoryview(raw)
    items: list[bytes] = []
    offset = 0
    for index in range(count):
        if offset + 4 > len(view):
            raise BadRequest(
                f"input '{name}' binary data ends before element {index} of {count} "
                "(each element is a 4-byte little-endian length, then its bytes)"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise BadRequest(
                f"input '{name}' element {index} says {length} bytes but only "
                f"{len(view) - offset} remain"
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != len(view):
        raise BadRequest(
            f"input '{name}' has {len(view) - offset} bytes after its {count} elements"
        )
    return items


def image_files(tensor: InputTensor, limits: Limits) -> list[bytes]:
    """A BYTES input -> the image files it carries (base64 strings in JSON, raw otherwise)."""
    check_input(tensor, limits)
    shape = tensor.shape
    if len(shape) > 2 or math.prod(shape) != shape[0]:
        raise BadRequest(f"BYTES input shape {shape} must be [N] (or [N,1]), one image per item")
    count = shape[0]
    if tensor.raw is not None:
        return split_bytes_elements(tensor.raw, count, tensor.name)
    if tensor.elements is not None:
        if len(tensor.elements) != count:
            raise BadRequest(
                f"BYTES input shape {shape} needs {count} elements, got {len(tensor.elements)}"
            )
        return tensor.elements
    items = tensor.data
    if isinstance(items, list) and len(shape) == 2:
        items = [item[0] if isinstance(item, list) and len(item) == 1 else item for item in items]
    if not isinstance(items, list) or len(items) != count:
        raise BadRequest(f"BYTES input shape {shape} must be [N] with N = number of items")
    return [decode_base64(item, f"input 'image' item {i}") for i, item in enumerate(items)]


async def input_rows(tensor: InputTensor, limits: Limits) -> np.ndarray:
    """Any input tensor -> checked (n, 784) pixel rows: image files are preprocessed."""
    if tensor.name == IMAGE_INPUT:
        return await decode_images(image_files(tensor, limits), limits)
    return pixel_tensor_rows(tensor, limits)


def output_arrays(names: list[str], result: Predictions) -> list[tuple[str, str, np.ndarray]]:
    """(name, datatype, array) of each requested output, in the order asked."""
    arrays = {
        PROBABILITIES: ("FP32", result.probabilities),
        DIGIT: ("INT64", result.digits.astype(np.int64, copy=False)),
    }
    return [(name, *arrays[name]) for name in names]


def raw_bytes(array: np.ndarray, datatype: str) -> bytes:
    """An output's data as the protocol's raw bytes: little-endian, row-major, no padding."""
    return np.ascontiguousarray(array, dtype=DTYPES[datatype]).tobytes()
