"""Open Inference Protocol v2 (KServe / Triton REST), so existing clients work unchanged.

Inputs (one tensor): FP32 [N,784] / [N,1,28,28] / [N,28,28] or UINT8 [N,28,28]
raw pixel intensities 0..255 (white digit on black), or BYTES [N] of base64
image files that go through the same preprocessing as /v1. Outputs:
`probabilities` FP32 [N,10] and `digit` INT64 [N]; `outputs` selects among them.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from service import __name__ as server_name
from service.api.auth import documented_schemes
from service.api.disconnect import predict_while_connected
from service.api.parsing import check_depth, check_item_count, decode_base64, decode_images
from service.api.responses import FastJSONResponse
from service.api.schemas import EXAMPLE_PIXELS, EXAMPLE_PNG_BASE64, error_responses
from service.api.state import AppState
from service.errors import BadRequest, NotFound
from service.model import PIXELS

OUTPUTS = {"probabilities": ("FP32", 10), "digit": ("INT64", None)}
PIXEL_SHAPES = {(PIXELS,), (1, 28, 28), (28, 28)}


class TensorInput(BaseModel):
    name: str = Field(examples=["pixels"])
    shape: list[int] = Field(examples=[[1, 784]])
    datatype: str = Field(examples=["FP32"], description="FP32, UINT8 or BYTES")
    data: list[Any] = Field(description="Row-major values, flat or nested; BYTES: base64 files")
    parameters: dict[str, Any] | None = None


class RequestedOutput(BaseModel):
    name: str = Field(examples=["digit"])
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[TensorInput] = Field(min_length=1, max_length=1)
    outputs: list[RequestedOutput] | None = None


class TensorOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[TensorOutput]


INFER_EXAMPLES = {
    "UINT8 pixels": {
        "value": {"inputs": [{"name": "pixels", "shape": [1, 28, 28], "datatype": "UINT8",
                              "data": [int(v) for row in EXAMPLE_PIXELS for v in row]}]}
    },
    "BYTES image file": {
        "value": {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                              "data": [EXAMPLE_PNG_BASE64]}], "outputs": [{"name": "digit"}]}
    },
}  # fmt: skip


def _flatten(data: list[Any]) -> list[Any]:
    if data and isinstance(data[0], list):
        return np.asarray(data, dtype=object).ravel().tolist()
    return data


def _pixel_rows(tensor: TensorInput) -> np.ndarray:
    shape = tuple(tensor.shape)
    if len(shape) < 2 or shape[1:] not in PIXEL_SHAPES or shape[0] < 1:
        raise BadRequest(
            f"input shape {list(shape)} not supported: use [N,784], [N,1,28,28] or [N,28,28]"
        )
    dtype = np.float32 if tensor.datatype == "FP32" else np.uint8
    try:
        values = np.asarray(_flatten(tensor.data), dtype=np.float64)
    except (ValueError, TypeError):
        raise BadRequest(f"input '{tensor.name}' data must be numbers") from None
    if values.ndim != 1 or values.size != shape[0] * PIXELS:
        raise BadRequest(
            f"input '{tensor.name}' has {values.size} values but shape {list(shape)} "
            f"needs {shape[0] * PIXELS}"
        )
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 255:
        raise BadRequest(f"input '{tensor.name}' values must be pixel intensities 0..255")
    if dtype == np.uint8 and not np.array_equal(values, np.round(values)):
        raise BadRequest(f"input '{tensor.name}' is UINT8 but holds fractions")
    return values.astype(np.float32).reshape(shape[0], 28, 28)


def _check_depth(inference: InferenceRequest, max_depth: int) -> None:
    """The free-form parts (parameters, one sample of data) may not nest too deep."""
    tensor = inference.inputs[0]
    free_form = {
        "parameters": inference.parameters,
        "outputs": [output.parameters for output in inference.outputs or []],
        "inputs": [{"parameters": tensor.parameters, "data": tensor.data[:1]}],
    }
    check_depth(free_form, max_depth)


async def _input_pixels(tensor: TensorInput, state: AppState) -> np.ndarray:
    if tensor.datatype in ("FP32", "UINT8"):
        rows = _pixel_rows(tensor)
        check_item_count(len(rows), state.limits)
        return rows
    if tensor.datatype == "BYTES":
        items = _flatten(tensor.data)
        if len(tensor.shape) != 1 or tensor.shape[0] != len(items):
            raise BadRequest(
                f"BYTES input shape {tensor.shape} must be [N] with N = {len(items)} items"
            )
        check_item_count(len(items), state.limits)
        blobs = [
            decode_base64(item, f"input '{tensor.name}' item {i}") for i, item in enumerate(items)
        ]
        return await decode_images(blobs, state.limits)
    raise BadRequest(f"datatype {tensor.datatype!r} not supported: use FP32, UINT8 or BYTES")


def build_router() -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])

    def check_model(state: AppState, name: str, version: str | None) -> None:
        if name != state.model.name:
            raise NotFound(f"model '{name}' not found; this server serves '{state.model.name}'")
        if version is not None and version != str(state.model.version):
            raise NotFound(
                f"model '{name}' version '{version}' not found; served: {state.model.version}"
            )

    @router.get("", summary="Server metadata")
    async def server_metadata() -> Response:
        return FastJSONResponse({"name": server_name, "version": "2", "extensions": []})

    @router.get("/health/live", summary="Server live")
    async def live() -> Response:
        return FastJSONResponse({"live": True})

    @router.get("/health/ready", summary="Server ready", responses=error_responses(503))
    async def ready(request: Request) -> Response:
        ready = AppState.of(request).lifecycle.ready
        return FastJSONResponse({"ready": ready}, status_code=200 if ready else 503)

    def metadata(state: AppState) -> dict[str, Any]:
        return {
            "name": state.model.name,
            "versions": [str(state.model.version)],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {"name": "pixels", "datatype": "FP32", "shape": [-1, PIXELS]},
                {"name": "pixels", "datatype": "UINT8", "shape": [-1, 28, 28]},
                {"name": "image", "datatype": "BYTES", "shape": [-1]},
            ],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                {"name": "digit", "datatype": "INT64", "shape": [-1]},
            ],
        }

    async def infer(
        request: Request, inference: InferenceRequest, name: str, version: str | None
    ) -> Response:
        state = AppState.of(request)
        check_model(state, name, version)
        wanted = [output.name for output in inference.outputs or []] or list(OUTPUTS)
        unknown = sorted(set(wanted) - set(OUTPUTS))
        if unknown:
            raise BadRequest(f"unknown outputs {unknown}; available: {list(OUTPUTS)}")
        state.predictor.check_capacity()
        _check_depth(inference, state.limits.max_json_depth)
        pixels = await _input_pixels(inference.inputs[0], state)
        result = await predict_while_connected(request, pixels)
        count = len(pixels)
        tensors = {
            "probabilities": {
                "shape": [count, 10],
                "datatype": "FP32",
                "data": result.probabilities.ravel(),
            },
            "digit": {
                "shape": [count],
                "datatype": "INT64",
                "data": result.digits.astype(np.int64),
            },
        }
        answer: dict[str, Any] = {
            "model_name": state.model.name,
            "model_version": str(state.model.version),
            "outputs": [{"name": output, **tensors[output]} for output in wanted],
        }
        if inference.id is not None:
            answer["id"] = inference.id
        return FastJSONResponse(answer)

    def add_model_routes(prefix: str) -> None:
        @router.get(
            prefix,
            summary="Model metadata",
            responses=error_responses(404),
            dependencies=documented_schemes,
        )
        async def model_metadata(
            request: Request, name: str, version: str | None = None
        ) -> Response:
            state = AppState.of(request)
            check_model(state, name, version)
            return FastJSONResponse(metadata(state))

        @router.get(prefix + "/ready", summary="Model ready", responses=error_responses(404, 503))
        async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
            state = AppState.of(request)
            check_model(state, name, version)
            ready = state.lifecycle.ready
            return FastJSONResponse(
                {"name": name, "ready": ready}, status_code=200 if ready else 503
            )

        @router.post(
            prefix + "/infer",
            summary="Inference",
            response_model=InferenceResponse,
            responses=error_responses(400, 401, 404, 413, 422, 429, 503, 504),
            dependencies=documented_schemes,
        )
        async def model_infer(
            request: Request,
            inference: Annotated[InferenceRequest, Body(openapi_examples=INFER_EXAMPLES)],
            name: str,
            version: str | None = None,
        ) -> Response:
            """Classify FP32/UINT8 pixel tensors or BYTES image files (base64).
            Malformed tensors answer 400 with {"error": "..."}."""
            return await infer(request, inference, name, version)

    add_model_routes("/models/{name}")
    add_model_routes("/models/{name}/versions/{version}")
    return router
