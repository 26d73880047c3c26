"""HTTP bodies of the inference protocol: a JSON request in, binary tensor data after it.

Triton's binary tensor data extension (which tritonclient uses by default): the
body is a JSON header of `Inference-Header-Content-Length` bytes, followed by
the raw data of each input whose `parameters.binary_data_size` says how many
bytes it takes, in input order. Outputs are answered as raw bytes after the
JSON header when the request asks (`parameters.binary_data: true` on an
output, or `binary_data_output: true` on the request); JSON and binary inputs
and outputs mix freely. Without that header the whole body is JSON, whatever
its Content-Type (tritonclient sends none).

Every size is checked against the body before a byte is sliced: a header
length past the body, data claimed twice, missing or left over, is a 400 that
says so. Slices are memoryviews of the body, never copies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from service.api.answers import json_bytes
from service.api.parsing import Limits, check_depth
from service.api.tensors import (
    INPUT_TYPES,
    OUTPUT_TYPES,
    InferenceRequest,
    InputTensor,
    RequestedOutput,
    check_outputs,
    output_arrays,
    raw_bytes,
)
from service.errors import BadRequest
from service.predictor import Predictions

HEADER_LENGTH = b"inference-header-content-length"
HEADER_LENGTH_NAME = "Inference-Header-Content-Length"
BINARY_MEDIA_TYPE = "application/octet-stream"
JSON_MEDIA_TYPE = "application/json"


def header_length(value: bytes | None) -> int | None:
    """The `Inference-Header-Content-Length` header, parsed (None: the body is all JSON)."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 18:
        raise BadRequest(
            f"{HEADER_LENGTH_NAME} must be the JSON header's length in bytes, got {value[:40]!r}"
        )
    return int(text)


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where} must be a JSON object")
    return value


def _field(value: dict[str, Any], key: str, kind: type, where: str) -> Any:
    item = value.get(key)
    if not isinstance(item, kind) or isinstance(item, bool) != (kind is bool):
        raise BadRequest(f"{where} needs '{key}' as a {kind.__name__}")
    return item


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{where} parameter '{key}' must be true or false")
    return value


def _input(value: Any, binary: memoryview, offset: int) -> tuple[InputTensor, int]:
    """One `$request_input` -> a tensor (its binary slice taken at `offset`) and the next offset."""
    if not isinstance(value, dict):
        raise BadRequest('each of "inputs" must be a JSON object with name, shape, datatype')
    name = _field(value, "name", str, "an input")
    where = f"input '{name}'"
    datatype = _field(value, "datatype", str, where)
    shape = _field(value, "shape", list, where)
    if not all(isinstance(size, int) and not isinstance(size, bool) for size in shape):
        raise BadRequest(f"{where} shape {shape} must be a list of integers")
    parameters = _object(value.get("parameters"), f"{where} 'parameters'")
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in value:
            raise BadRequest(f"{where} needs 'data', or 'binary_data_size' in its parameters")
        return InputTensor(name, datatype, shape, data=value["data"]), offset
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequest(f"{where} 'binary_data_size' must be a non-negative integer")
    if "data" in value:
        raise BadRequest(f"{where} has both 'data' and 'binary_data_size'; send one")
    end = offset + size
    if end > len(binary):
        raise BadRequest(
            f"{where} says binary_data_size {size} but only {len(binary) - offset} bytes of "
            f"binary data are left after the JSON header (check {HEADER_LENGTH_NAME})"
        )
    return InputTensor(name, datatype, shape, raw=binary[offset:end]), end


def _outputs(value: Any, default_binary: bool) -> list[RequestedOutput]:
    if value is None:
        return [RequestedOutput(name, default_binary) for name in OUTPUT_TYPES]
    if not isinstance(value, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in value
    ):
        raise BadRequest('"outputs" must be a list of {"name": ...} objects')
    requested = []
    for output in value:
        where = f"output '{output['name']}'"
        parameters = _object(output.get("parameters"), f"{where} 'parameters'")
        if "classification" in parameters:
            raise BadRequest(
                f"{where}: the classification extension is not supported; "
                "ask for the 'digit' and 'probabilities' outputs instead"
            )
        binary = default_binary
        if "binary_data" in parameters:
            binary = _flag(parameters, "binary_data", where)
        requested.append(RequestedOutput(output["name"], binary))
    check_outputs([o.name for o in requested])
    return requested


def _timeout(parameters: dict[str, Any]) -> float | None:
    """Triton's request `timeout` parameter, in microseconds (it can only shorten ours)."""
    value = parameters.get("timeout")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BadRequest("request parameter 'timeout' must be a positive number of microseconds")
    return value / 1e6


def decode_request(body: bytes, json_length: int | None, limits: Limits) -> InferenceRequest:
    """An infer body (JSON, optionally followed by binary tensor data) -> `InferenceRequest`."""
    view = memoryview(body)
    if json_length is None:
        head, binary = view, view[len(view) :]
    else:
        if json_length > len(view):
            raise BadRequest(
                f"{HEADER_LENGTH_NAME} is {json_length} but the body has only {len(view)} bytes"
            )
        head, binary = view[:json_length], view[json_length:]
    try:
        value = orjson.loads(head)
    except orjson.JSONDecodeError as error:
        hint = "" if json_length is not None else f" (binary data needs {HEADER_LENGTH_NAME})"
        raise BadRequest(f"the request's JSON is not valid: {error}{hint}") from None
    if not isinstance(value, dict):
        raise BadRequest('the request must be a JSON object with "inputs"')
    inputs = _field(value, "inputs", list, "an inference request")
    # The free-form parts may not nest deeply; tensor data itself is checked by numpy.
    check_depth({k: v for k, v in value.items() if k != "inputs"}, limits.max_json_depth)
    tensors, offset = [], 0
    for item in inputs:
        tensor, offset = _input(item, binary, offset)
        tensors.append(tensor)
    if offset != len(binary):
        raise BadRequest(
            f"{len(binary) - offset} bytes of binary data after the JSON header belong to no "
            f"input (check {HEADER_LENGTH_NAME} and each input's binary_data_size)"
        )
    if len(tensors) != 1:
        raise BadRequest(f'"inputs" must hold exactly one tensor, one of {list(INPUT_TYPES)}')
    parameters = _object(value.get("parameters"), "request 'parameters'")
    default_binary = _flag(parameters, "binary_data_output", "request")
    request_id = value.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest('"id" must be a string')
    return InferenceRequest(
        input=tensors[0],
        outputs=_outputs(value.get("outputs"), default_binary),
        id=request_id,
        timeout_s=_timeout(parameters),
        parameters=parameters,
    )


def encode_response(
    head: dict[str, Any], requested: list[RequestedOutput], result: Predictions
) -> tuple[bytes, int | None]:
    """The answer body and, when any output is binary, the JSON header's length."""
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    arrays = output_arrays([output.name for output in requested], result)
    for output, (name, datatype, array) in zip(requested, arrays, strict=True):
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": datatype,
            "shape": list(array.shape),
        }
        if output.binary:
            data = raw_bytes(array, datatype)
            tensor["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            tensor["data"] = np.ascontiguousarray(array).reshape(-1)
        tensors.append(tensor)
    header = json_bytes({**head, "outputs": tensors})
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
