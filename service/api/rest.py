"""REST API v1: POST an image, get the digit."""

from __future__ import annotations

from urllib.parse import parse_qs

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.answers import JSONAnswer
from service.api.asgi import client_gone, header
from service.api.auth import documented_schemes
from service.api.fast_routes import served_directly
from service.api.parsing import Limits, batch_rows, single_image_rows
from service.api.schemas import (
    BATCH_BODY,
    PREDICT_BODY,
    BatchPrediction,
    ModelsResponse,
    Prediction,
    error_responses,
)
from service.errors import InvalidInput
from service.lifecycle import Lifecycle
from service.predictor import Predictions, Predictor
from service.registry import ModelRegistry

TIMEOUT_HEADER = b"x-request-timeout-ms"
VERSION_HEADER = b"x-model-version"
DECIMALS = 6  # probabilities to 1e-6: more digits are float noise to a reader


def prediction_items(result: Predictions, model: dict[str, object]) -> list[dict[str, object]]:
    probabilities = np.round(result.probabilities.astype(np.float64), DECIMALS).tolist()
    return [
        {
            "digit": int(digit),
            "confidence": round(float(confidence), DECIMALS),
            "probabilities": row,
            "model": model,
        }
        for digit, confidence, row in zip(
            result.digits, result.confidences, probabilities, strict=True
        )
    ]


def request_timeout(request: Request) -> float | None:
    """The optional per-request deadline header, in milliseconds (it can only shorten)."""
    raw = header(request.scope, TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        milliseconds = float(raw)
    except ValueError:
        milliseconds = -1.0
    if not 0 < milliseconds < 1e9:
        raise InvalidInput("x-request-timeout-ms must be a positive number of milliseconds")
    return milliseconds / 1000


def requested_version(request: Request) -> str | None:
    """`?version=N` or the `X-Model-Version` header; None: the newest served version."""
    query = request.scope.get("query_string")
    if query:
        values: list[str] = parse_qs(query.decode("latin-1")).get("version", [])
        if values:
            return values[-1]
    value = header(request.scope, VERSION_HEADER)
    return value.decode("latin-1") if value is not None else None


async def predict_rows(predictor: Predictor, request: Request, rows: np.ndarray) -> Predictions:
    """Queue the rows; drop them if the client leaves; answer within its deadline."""
    return await predictor.predict(
        rows, timeout_s=request_timeout(request), abandoned=client_gone(request.scope)
    )


def build_router(registry: ModelRegistry, limits: Limits, lifecycle: Lifecycle) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["REST v1"], dependencies=documented_schemes)
    failures = error_responses(401, 404, 413, 415, 422, 429, 503, 504)

    @router.post(
        "/predict",
        response_model=Prediction,
        responses=failures,
        openapi_extra=PREDICT_BODY,
        summary="Recognise the digit in one image",
    )
    @served_directly
    async def predict(request: Request) -> Response:
        """Send one image as a raw `image/*` body, as multipart field `file`, or as JSON
        `{"image": "<base64>"}` / `{"pixels": [[28 x 28 numbers 0..255]]}` (white on black).
        Photos and drawings of any size, colour or polarity are normalised like MNIST.
        `?version=N` (or header `X-Model-Version`) picks a served model version;
        header `X-Request-Timeout-Ms` shortens the deadline."""
        predictor = registry.resolve(version=requested_version(request))
        predictor.check_capacity()
        rows = await single_image_rows(request, limits)
        result = await predict_rows(predictor, request, rows)
        return JSONAnswer(prediction_items(result, predictor.ref)[0])

    @router.post(
        "/predict/batch",
        response_model=BatchPrediction,
        responses=failures,
        openapi_extra=BATCH_BODY,
        summary="Recognise the digits in many images",
    )
    @served_directly
    async def predict_batch(request: Request) -> Response:
        """Send images as repeated multipart field `files`, or JSON `{"images": ["<base64>", ...]}`,
        or pixel arrays with no image files to decode: raw `application/octet-stream`
        N x 28 x 28 uint8 bytes, or a `.npy` array (`application/x-npy`).
        The answer lists one prediction per image, in the order sent."""
        predictor = registry.resolve(version=requested_version(request))
        predictor.check_capacity()
        rows = await batch_rows(request, limits)
        result = await predict_rows(predictor, request, rows)
        return JSONAnswer({"predictions": prediction_items(result, predictor.ref)})

    @router.get("/models", response_model=ModelsResponse, summary="The served model versions")
    async def models() -> Response:
        """Every served version of the model, newest last, with its full model card
        (metrics, training, checksums)."""
        return JSONAnswer(
            {
                "models": [
                    {
                        **predictor.ref,
                        "variant": predictor.model.variant,
                        "file": predictor.model.path.name,
                        "ready": lifecycle.ready,
                        "card": predictor.model.card.model_dump(mode="json"),
                    }
                    for predictor in registry.served()
                ]
            }
        )

    return router
