"""Open Inference Protocol v2 (KServe / Triton REST), so existing clients work unchanged.

Health, server and model metadata, readiness and `infer` for the served model
and each of its versions. Tensors are parsed and encoded in `service.api.tensors`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from service.api.answers import JSONAnswer
from service.api.asgi import client_gone, header, read_body
from service.api.auth import documented_schemes
from service.api.content_coding import accepted_coding, decode_body, encode_body
from service.api.fast_routes import served_directly
from service.api.infer_body import (
    BINARY_MEDIA_TYPE,
    HEADER_LENGTH,
    HEADER_LENGTH_NAME,
    JSON_MEDIA_TYPE,
    decode_request,
    encode_response,
    header_length,
)
from service.api.parsing import Limits
from service.api.rest import request_timeout
from service.api.schemas import EXAMPLE_PIXELS, EXAMPLE_PNG_BASE64, error_responses
from service.api.tensors import input_rows, input_specs, output_specs
from service.lifecycle import Lifecycle
from service.predictor import Predictor
from service.registry import ModelRegistry

# The protocol extensions this server implements, as `GET /v2` lists them.
EXTENSIONS = ["binary_tensor_data"]
SERVER_NAME = "mnist-serve"


def server_version() -> str:
    try:
        return version(SERVER_NAME)
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


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


EXAMPLE_U8 = [int(v) for row in EXAMPLE_PIXELS for v in row]
INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["inputs"]},
                "examples": {
                    "UINT8 pixels": {"value": {"inputs": [
                        {"name": "image_u8", "shape": [1, 28, 28], "datatype": "UINT8",
                         "data": EXAMPLE_U8}]}},
                    "BYTES image file": {"value": {
                        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                    "data": [EXAMPLE_PNG_BASE64]}],
                        "outputs": [{"name": "digit"}]}},
                },
            }
        },
    }
}  # fmt: skip


def server_info() -> dict[str, object]:
    """What `GET /v2` (and gRPC `ServerMetadata`) answer: this server, its extensions."""
    return {"name": SERVER_NAME, "version": server_version(), "extensions": EXTENSIONS}


def model_metadata(registry: ModelRegistry, predictor: Predictor) -> dict[str, Any]:
    """Built from what is served: the versions, the card's inputs and outputs."""
    card = predictor.model.card
    return {
        "name": registry.name,
        "versions": [str(p.model.version) for p in registry.served()],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": name, **spec} for name, spec in input_specs(card).items()],
        "outputs": [{"name": name, **spec} for name, spec in output_specs(card).items()],
        "parameters": {"version": str(predictor.model.version), "variant": predictor.model.variant},
    }


def build_router(registry: ModelRegistry, limits: Limits, lifecycle: Lifecycle) -> APIRouter:
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])
    server = server_info()

    @router.get("", summary="Server metadata")
    async def server_metadata() -> Response:
        return JSONAnswer(server)

    @router.get("/health/live", summary="Server live")
    @served_directly
    async def live(request: Request) -> Response:
        return JSONAnswer({"live": True})

    @router.get("/health/ready", summary="Server ready", responses=error_responses(503))
    @served_directly
    async def ready(request: Request) -> Response:
        is_ready = lifecycle.ready
        return JSONAnswer({"ready": is_ready}, status_code=200 if is_ready else 503)

    async def infer(request: Request, name: str, version: str | None) -> Response:
        predictor = registry.resolve(name, version)
        predictor.check_capacity()
        scope = request.scope
        body = await read_body(scope, request.receive, limits.max_upload_bytes)
        body = decode_body(scope, body, limits.max_upload_bytes)
        inference = decode_request(body, header_length(header(scope, HEADER_LENGTH)), limits)
        rows = await input_rows(inference.input, limits)
        deadlines = [t for t in (request_timeout(request), inference.timeout_s) if t is not None]
        result = await predictor.predict(
            rows, timeout_s=min(deadlines, default=None), abandoned=client_gone(scope)
        )
        head: dict[str, Any] = {
            "model_name": registry.name,
            "model_version": str(predictor.model.version),
        }
        if inference.id is not None:
            head["id"] = inference.id
        content, json_length = encode_response(head, inference.outputs, result)
        headers = {}
        if json_length is not None:
            headers[HEADER_LENGTH_NAME] = str(json_length)
        coding = accepted_coding(scope)
        if coding is not None:
            content = encode_body(content, coding)
            headers["Content-Encoding"] = coding
        media_type = JSON_MEDIA_TYPE if json_length is None else BINARY_MEDIA_TYPE
        return Response(content, headers=headers, media_type=media_type)

    def add_model_routes(prefix: str) -> None:
        @router.get(
            prefix,
            summary="Model metadata",
            responses=error_responses(404),
            dependencies=documented_schemes,
        )
        async def metadata(name: str, version: str | None = None) -> Response:
            return JSONAnswer(model_metadata(registry, registry.resolve(name, version)))

        @router.get(prefix + "/ready", summary="Model ready", responses=error_responses(404, 503))
        async def model_ready(name: str, version: str | None = None) -> Response:
            registry.resolve(name, version)
            is_ready = lifecycle.ready
            return JSONAnswer(
                {"name": name, "ready": is_ready}, status_code=200 if is_ready else 503
            )

        @router.post(
            prefix + "/infer",
            summary="Inference",
            response_model=InferenceResponse,
            responses=error_responses(400, 401, 404, 413, 429, 503, 504),
            openapi_extra=INFER_BODY,
            dependencies=documented_schemes,
        )
        @served_directly
        async def model_infer(request: Request, name: str, version: str | None = None) -> Response:
            """Classify pixel tensors (`pixels` FP32 or `image_u8` UINT8, intensities
            0..255, white digit on black; 0..1 tensors are refused) or image files
            (`image`, BYTES, base64 in JSON). Any Content-Type. Triton's binary tensor
            data extension: raw tensor bytes after the JSON header, whose length is in
            `Inference-Header-Content-Length`, per input `parameters.binary_data_size`;
            outputs as raw bytes with `parameters.binary_data: true` (or request
            parameter `binary_data_output`). `Content-Encoding: gzip|deflate` bodies
            and `Accept-Encoding` answers. Malformed tensors answer 400 with
            {"error": "..."}."""
            return await infer(request, name, version)

    add_model_routes("/models/{name}")
    add_model_routes("/models/{name}/versions/{version}")
    return router
