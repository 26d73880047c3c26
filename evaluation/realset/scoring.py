"""Ask a model what each real digit is: in process, or through a running service.

Both answerers take the encoded file bytes and return an `Answer`; an error
(the service's 4xx `{"error": ...}`, or the preprocessor's typed error in
process) is an answer too, and counts as wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from evaluation.realset.dataset import RealDigit
from service.errors import ServiceError
from service.model import PIXELS, OnnxModel
from service.preprocess import preprocess_image
from service.preprocess.formats import sniff_image_format


@dataclass(frozen=True)
class Answer:
    digit: int | None  # None when the image was refused
    confidence: float | None
    error: str | None = None


@dataclass(frozen=True)
class Result:
    item: RealDigit
    answer: Answer

    @property
    def correct(self) -> bool:
        return self.answer.error is None and self.answer.digit == self.item.label


Answerer = Callable[[bytes], Answer]


def in_process(version_dir: Path) -> Answerer:
    """The service's own preprocessing and the card-checked ONNX file, no server."""
    model = OnnxModel(version_dir)

    def answer(body: bytes) -> Answer:
        try:
            pixels = preprocess_image(body)
        except ServiceError as error:
            return Answer(None, None, f"{error.status_code} {error}")
        row = np.ascontiguousarray(pixels, dtype=np.float32).reshape(1, PIXELS)
        probabilities = model.predict(row)[0]
        digit = int(probabilities.argmax())
        return Answer(digit, float(probabilities[digit]))

    return answer


def over_http(url: str, client: httpx.Client) -> Answerer:
    """POST each file as a raw body to `{url}/v1/predict` with its sniffed media type."""
    endpoint = url.rstrip("/") + "/v1/predict"

    def answer(body: bytes) -> Answer:
        media_type = sniff_image_format(body) or "application/octet-stream"
        try:
            response = client.post(endpoint, content=body, headers={"Content-Type": media_type})
        except httpx.HTTPError as error:
            return Answer(None, None, f"request failed: {error}")
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code != 200:
            message = payload.get("error") if isinstance(payload, dict) else None
            return Answer(None, None, f"{response.status_code} {message or response.text[:200]}")
        return Answer(int(payload["digit"]), float(payload["confidence"]))

    return answer


def score(digits: Iterable[RealDigit], answer: Answerer, *, progress: bool = False) -> list[Result]:
    """One result per digit, in order."""
    digits = list(digits)
    iterator: Iterable[RealDigit] = digits
    if progress:
        from tqdm import tqdm

        iterator = tqdm(digits, desc="evaluate", unit="digit")
    return [Result(item, answer(item.read_bytes())) for item in iterator]
