"""REST API v1: POST an image, get the digit."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.auth import documented_schemes
from service.api.disconnect import predict_while_connected
from service.api.parsing import parse_batch, parse_single
from service.api.responses import FastJSONResponse
from service.api.schemas import (
    BATCH_BODY,
    PREDICT_BODY,
    BatchPrediction,
    ModelsResponse,
    Prediction,
    error_responses,
)
from service.api.state import AppState
from service.predictor import Predictions


def prediction_items(result: Predictions, model: dict[str, object]) -> list[dict[str, object]]:
    return [
        {
            "digit": int(digit),
            "confidence": float(confidence),
            "probabilities": probabilities,
            "model": model,
        }
        for digit, confidence, probabilities in zip(
            result.digits, result.confidences, result.probabilities, strict=True
        )
    ]


def build_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["REST v1"], dependencies=documented_schemes)
    failures = error_responses(401, 413, 415, 422, 429, 503, 504)

    @router.post(
        "/predict",
        response_model=Prediction,
        responses=failures,
        openapi_extra=PREDICT_BODY,
        summary="Recognise the digit in one image",
    )
    async def predict(request: Request) -> Response:
        """Send one image as multipart field `file`, as a raw `image/*` body, or as JSON
        `{"image": "<base64>"}` / `{"pixels": [[28 x 28 numbers 0..255]]}` (white on black).
        Photos and drawings of any size, colour or polarity are normalised like MNIST.
        Optional header `X-Request-Timeout-Ms` shortens the deadline."""
        state = AppState.of(request)
        state.predictor.check_capacity()
        pixels = await parse_single(request, state.limits)
        result = await predict_while_connected(request, pixels)
        return FastJSONResponse(prediction_items(result, state.model_ref)[0])

    @router.post(
        "/predict/batch",
        response_model=BatchPrediction,
        responses=failures,
        openapi_extra=BATCH_BODY,
        summary="Recognise the digits in many images",
    )
    async def predict_batch(request: Request) -> Response:
        """Send images as repeated multipart field `files`, or JSON `{"images": ["<base64>", ...]}`.
        The answer lists one prediction per image, in the order sent."""
        state = AppState.of(request)
        state.predictor.check_capacity()
        pixels = await parse_batch(request, state.limits)
        result = await predict_while_connected(request, pixels)
        return FastJSONResponse({"predictions": prediction_items(result, state.model_ref)})

    @router.get("/models", response_model=ModelsResponse, summary="The loaded model and its card")
    async def models(request: Request) -> Response:
        """The model being served, with its full model card (metrics, training, checksums)."""
        state = AppState.of(request)
        card = state.model.card.model_dump(mode="json")
        return FastJSONResponse(
            {
                "models": [
                    {
                        **state.model_ref,
                        "variant": state.model.variant,
                        "file": state.model.path.name,
                        "ready": state.lifecycle.ready,
                        "card": card,
                    }
                ]
            }
        )

    return router
