"""Request and response shapes, with the examples shown on /docs.

Request bodies are parsed by hand in `service.api.parsing` (one endpoint takes
multipart, raw image bytes or JSON, and validating 784 numbers with pydantic
would cost more than the inference); these models document them in OpenAPI.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# A 28x28 PNG of a handwritten 7 from MNIST's test set, base64-encoded.
EXAMPLE_PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAAAwUlEQVR42mNgGDaAEUKFpD77sfTFHeyS9xQYGBg+"
    "X4UKPuk6w8DAwMDAAuGm6l/TMnSweCzLwPDntSTDozPIOhkYGBgYBA3PmDIw/Lh1XShnGi5nBP+9KIRLTuzl/2Ao"
    "kwlDMlv0/U1cGq1//rPD6fHWf7tZcclxnv1hhVNj3b9tOOW8f3+wxCUnfPffMlxyzKf/3VbGJan2758vLjn5B/+K"
    "GXF78Z8JLjnbT+iSSGFrw8Nw9wuKJAsy56LzO+ITGABpETyQcCy90wAAAABJRU5ErkJggg=="
)


# A "1" as 28x28 intensities (a vertical white bar on black): blank pixels answer 422,
# so the documented example must hold a digit.
EXAMPLE_PIXELS = [[255.0 if 12 <= column <= 15 else 0.0 for column in range(28)] for _ in range(28)]


class ModelRef(BaseModel):
    name: str = Field(examples=["mnist-mlp"])
    version: int = Field(examples=[1])


class Prediction(BaseModel):
    digit: int = Field(ge=0, le=9, description="The most probable digit", examples=[7])
    confidence: float = Field(
        ge=0, le=1, description="Probability of that digit (6 decimals)", examples=[0.998]
    )
    uncertain: bool = Field(
        description="True when the top probability is under the uncertain_below threshold or "
        "the top two are closer than uncertain_margin (see GET /v1/models, `uncertain_rule`): "
        "check the answer or retake the photo",
        examples=[False],
    )
    probabilities: list[float] = Field(
        min_length=10, max_length=10, description="Probability of each digit 0..9 (6 decimals)"
    )
    model: ModelRef


class BatchPrediction(BaseModel):
    predictions: list[Prediction] = Field(description="One item per image, in input order")


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong and what to do about it")


class ImageJSON(BaseModel):
    image: str = Field(
        description="Base64 of an image file (PNG, JPEG, ...); a data: URL works too"
    )


class PixelsJSON(BaseModel):
    pixels: list[list[float]] = Field(
        description="28 rows of 28 intensities 0..255, white digit on black (MNIST convention)"
    )


class BatchJSON(BaseModel):
    images: list[str] = Field(description="Base64 image files; the answer keeps this order")


class ModelsResponse(BaseModel):
    models: list[dict[str, Any]] = Field(description="Loaded models with their model cards")


PREPROCESS_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The 28x28 greyscale PNG the model receives (white digit on black)",
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    texts = {
        400: "Malformed request",
        401: "Missing or invalid API key",
        404: "Unknown model or version",
        413: "Body, image or item count over a limit",
        415: "Unsupported content type or image format",
        422: "Not a usable image or pixel array",
        429: "Queue full: retry after the Retry-After header",
        503: "Shutting down: retry on another replica",
        504: "Deadline exceeded",
    }
    return {status: {"model": ErrorBody, "description": texts[status]} for status in statuses}


def _binary() -> dict[str, Any]:
    return {"schema": {"type": "string", "format": "binary"}}


PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "image/png": _binary(),
            "image/jpeg": _binary(),
            "application/json": {
                "schema": {
                    "oneOf": [ImageJSON.model_json_schema(), PixelsJSON.model_json_schema()]
                },
                "examples": {
                    "base64 image": {"value": {"image": EXAMPLE_PNG_BASE64}},
                    "pixels": {"value": {"pixels": EXAMPLE_PIXELS}},
                },
            },
        },
    }
}

BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["files"],
                }
            },
            "application/json": {
                "schema": BatchJSON.model_json_schema(),
                "example": {"images": [EXAMPLE_PNG_BASE64, EXAMPLE_PNG_BASE64]},
            },
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "N x 28 x 28 uint8 pixels, row-major (numpy: "
                    "images.astype(np.uint8).tobytes()); N = length / 784. Intensities "
                    "0..255, white digit on black. A .npy array (np.save; shape (N, 28, 28) or "
                    "(N, 784), uint8 or float) is accepted too, here or as application/x-npy.",
                }
            },
        },
    }
}
