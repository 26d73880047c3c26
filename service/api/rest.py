"""REST API v1: POST an image, get the digit."""

from __future__ import annotations

import io
from urllib.parse import parse_qs

import numpy as np
from fastapi import APIRouter, Request
from PIL import Image
from starlette.responses import Response

from service.api.answers import JSONAnswer
from service.api.asgi import client_gone, header
from service.api.auth import documented_schemes
from service.api.fast_routes import served_directly
from service.api.parsing import Limits, batch_rows, single_image_rows
from service.api.schemas import (
    BATCH_BODY,
    PREDICT_BODY,
    PREPROCESS_RESPONSE,
    BatchPrediction,
    ModelsResponse,
    Prediction,
    error_responses,
)
from service.errors import InvalidInput
from service.lifecycle import Lifecycle
from service.predictor import Predictions, Predictor
from service.registry import ModelRegistry
from service.uncertainty import UncertaintyPolicy, UncertaintyRule

TIMEOUT_HEADER = b"x-request-timeout-ms"
VERSION_HEADER = b"x-model-version"
DECIMALS = 6  # probabilities to 1e-6: more digits are float noise to a reader


def prediction_items(
    result: Predictions, model: dict[str, object], rule: UncertaintyRule
) -> list[dict[str, object]]:
    probabilities = np.round(result.probabilities.astype(np.float64), DECIMALS).tolist()
    uncertain = rule.flags(result.probabilities).tolist()
    return [
        {
            "digit": int(digit),
            "confidence": round(float(confidence), DECIMALS),
            "uncertain": flag,
            "probabilities": row,
            "model": model,
        }
        for digit, confidence, flag, row in zip(
            result.digits, result.confidences, uncertain, probabilities, strict=True
        )
    ]


def model_view_png(rows: np.ndarray) -> bytes:
    """One (1, 784) row of 0..255 intensities as the 28x28 greyscale PNG the model saw."""
    pixels = np.clip(np.rint(rows.reshape(28, 28)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


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


def build_router(
    registry: ModelRegistry,
    limits: Limits,
    lifecycle: Lifecycle,
    uncertainty: UncertaintyPolicy,
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["REST v1"], dependencies=documented_schemes)
    failures = error_responses(401, 404, 413, 415, 422, 429, 503, 504)

    def answers(result: Predictions, predictor: Predictor) -> list[dict[str, object]]:
        return prediction_items(result, predictor.ref, uncertainty.rule(predictor.model.card))

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
        `uncertain` is true when the top probability is low or the top two are close:
        check such an answer, or retake the photo. Probabilities are rounded to 6 decimals.
        `?version=N` (or header `X-Model-Version`) picks a served model version;
        header `X-Request-Timeout-Ms` shortens the deadline."""
        predictor = registry.resolve(version=requested_version(request))
        predictor.check_capacity()
        rows = await single_image_rows(request, limits)
        result = await predict_rows(predictor, request, rows)
        return JSONAnswer(answers(result, predictor)[0])

    @router.post(
        "/preprocess",
        response_class=Response,
        responses={**PREPROCESS_RESPONSE, **error_responses(401, 413, 415, 422, 429, 503)},
        openapi_extra=PREDICT_BODY,
        summary="See the 28x28 image the model receives",
    )
    @served_directly
    async def preprocess(request: Request) -> Response:
        """Send an image exactly as to `/v1/predict` (raw `image/*` body, multipart field
        `file`, or JSON `{"image": "<base64>"}` / `{"pixels": ...}`) and get back, as a PNG,
        the 28x28 white-on-black picture that preprocessing made of it: what the model
        reads. A shadow, a ruled line or a second digit that became part of the digit shows
        here. Posting this PNG to `/v1/predict` gives the same answer as the original."""
        rows = await single_image_rows(request, limits)
        return Response(
            model_view_png(rows),
            media_type="image/png",
            headers={"Cache-Control": "no-store"},
        )

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
        return JSONAnswer({"predictions": answers(result, predictor)})

    @router.get("/models", response_model=ModelsResponse, summary="The served model versions")
    async def models() -> Response:
        """Every served version of the model, newest last, with its full model card
        (metrics, training, checksums) and the rule that marks its answers `uncertain`."""
        return JSONAnswer(
            {
                "models": [
                    {
                        **predictor.ref,
                        "variant": predictor.model.variant,
                        "file": predictor.model.path.name,
                        "ready": lifecycle.ready,
                        "uncertain_rule": uncertainty.rule(predictor.model.card).describe(),
                        "card": predictor.model.card.model_dump(mode="json"),
                    }
                    for predictor in registry.served()
                ]
            }
        )

    return router
