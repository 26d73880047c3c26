"""Open Inference Protocol v2 tensors: request bodies in, output tensors out.

The model takes one image per row, through any ONE of these inputs (unique
names, listed in the model metadata):

- `pixels`   FP32  [N,784] (or [N,28,28], [N,1,28,28]): intensities 0..255,
  white digit on black (MNIST's convention; 0..1 tensors are refused with a
  message, never silently misread);
- `image_u8` UINT8 [N,28,28] (or [N,784]): the same, as bytes;
- `image`    BYTES [N]: image files (PNG, JPEG, ...), base64 in JSON, preprocessed
  like /v1 uploads.

Outputs: `probabilities` FP32 [N,10] and `digit` INT64 [N]. Every pixel tensor
passes `service.inputs.pixel_rows`, the check /v1 uses too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.api.parsing import Limits, check_depth, check_item_count, decode_base64
from service.errors import BadRequest, InvalidInput
from service.inputs import PIXELS, pixel_rows

PIXEL_SCALE = {"pixel_scale": "0..255", "foreground": "white", "background": "black"}
INPUTS: dict[str, dict[str, Any]] = {
    "pixels": {"datatype": "FP32", "shape": [-1, PIXELS], "parameters": PIXEL_SCALE},
    "image_u8": {"datatype": "UINT8", "shape": [-1, 28, 28], "parameters": PIXEL_SCALE},
    "image": {
        "datatype": "BYTES",
        "shape": [-1],
        "parameters": {"content": "image files (PNG, JPEG, WebP, BMP, GIF, TIFF), base64 in JSON"},
    },
}
OUTPUTS: dict[str, dict[str, Any]] = {
    "probabilities": {"datatype": "FP32", "shape": [-1, 10]},
    "digit": {"datatype": "INT64", "shape": [-1]},
}
NUMPY_TYPES = {"FP32": np.float32, "UINT8": np.uint8}


@dataclass(frozen=True)
class InferenceRequest:
    """What an infer call asks: one input tensor, which outputs, and its id."""

    input_name: str
    datatype: str
    shape: list[int]
    data: Any  # nested or flat list (JSON); BYTES: a list of base64 strings
    outputs: list[str]
    id: str | None


def _field(value: dict[str, Any], key: str, kind: type, where: str) -> Any:
    item = value.get(key)
    if not isinstance(item, kind):
        raise BadRequest(f"{where} needs '{key}' as a {kind.__name__}")
    return item


def parse_request(body: bytes, limits: Limits) -> InferenceRequest:
    """A JSON inference request -> `InferenceRequest`, or a 400 that names the problem."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise BadRequest('the body must be a JSON object with "inputs"')
    inputs = _field(value, "inputs", list, "an inference request")
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(f'"inputs" must hold exactly one tensor, one of {list(INPUTS)}')
    tensor = inputs[0]
    name = _field(tensor, "name", str, "an input")
    datatype = _field(tensor, "datatype", str, f"input '{name}'")
    shape = _field(tensor, "shape", list, f"input '{name}'")
    if "data" not in tensor:
        raise BadRequest(f"input '{name}' needs 'data'")
    if not all(isinstance(size, int) and size >= 0 for size in shape):
        raise BadRequest(f"input '{name}' shape {shape} must be non-negative integers")
    # The free-form parts may not nest deeply; the data itself is checked by numpy.
    check_depth({k: v for k, v in value.items() if k != "inputs"}, limits.max_json_depth)
    check_depth(tensor.get("parameters"), limits.max_json_depth)
    requested = value.get("outputs")
    if requested is None:
        outputs = list(OUTPUTS)
    elif isinstance(requested, list) and all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        outputs = [o["name"] for o in requested]
    else:
        raise BadRequest('"outputs" must be a list of {"name": ...} objects')
    unknown = sorted(set(outputs) - set(OUTPUTS))
    if unknown:
        raise BadRequest(f"unknown outputs {unknown}; available: {list(OUTPUTS)}")
    request_id = value.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest('"id" must be a string')
    return InferenceRequest(name, datatype, shape, tensor["data"], outputs, request_id)


def pixel_tensor(request: InferenceRequest, limits: Limits) -> np.ndarray:
    """A numeric input tensor -> checked (n, 784) rows."""
    expected = INPUTS.get(request.input_name)
    if expected is None:
        raise BadRequest(
            f"unknown input '{request.input_name}'; this model takes one of {list(INPUTS)}"
        )
    if request.datatype != expected["datatype"]:
        raise BadRequest(
            f"input '{request.input_name}' has datatype {expected['datatype']}, "
            f"got {request.datatype}"
        )
    count = request.shape[0] if request.shape else 0
    check_item_count(count, limits)
    size = int(np.prod(request.shape))
    dtype = NUMPY_TYPES[request.datatype]
    try:
        values = np.asarray(request.data, dtype=np.float64 if dtype == np.uint8 else dtype)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(
            f"input '{request.input_name}' data must be {request.datatype} numbers"
        ) from None
    values = values.reshape(-1)
    if dtype == np.uint8:  # JSON numbers: whole and within 0..255, or the client is confused
        if not (np.isfinite(values).all() and (values == np.round(values)).all()):
            raise BadRequest(f"input '{request.input_name}' is UINT8 but holds fractions")
        if values.size and (values.min() < 0 or values.max() > 255):
            raise BadRequest(f"input '{request.input_name}' is UINT8: values must be 0..255")
        values = values.astype(np.uint8)
    if values.size != size:
        raise BadRequest(
            f"input '{request.input_name}' has {values.size} values but shape "
            f"{request.shape} needs {size}"
        )
    try:
        return pixel_rows(values.reshape(request.shape))
    except InvalidInput as error:  # the protocol answers every malformed tensor with 400
        raise BadRequest(f"input '{request.input_name}': {error.message}") from None


def image_files(request: InferenceRequest, limits: Limits) -> list[bytes]:
    """A BYTES input -> the image files it carries."""
    if request.datatype != "BYTES":
        raise BadRequest(f"input 'image' has datatype BYTES (image files), got {request.datatype}")
    items = request.data
    if not isinstance(items, list) or request.shape != [len(items)]:
        raise BadRequest(f"BYTES input shape {request.shape} must be [N] with N = number of items")
    check_item_count(len(items), limits)
    return [decode_base64(item, f"input 'image' item {i}") for i, item in enumerate(items)]


def output_tensors(
    outputs: list[str], probabilities: np.ndarray, digits: np.ndarray
) -> list[dict[str, Any]]:
    count = len(digits)
    tensors = {
        "probabilities": {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": [count, probabilities.shape[1]],
            "data": probabilities.ravel(),
        },
        "digit": {
            "name": "digit",
            "datatype": "INT64",
            "shape": [count],
            "data": digits.astype(np.int64),
        },
    }
    return [tensors[name] for name in outputs]
