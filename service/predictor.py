"""From validated pixel rows to predictions: the one path every endpoint shares.

Routes (REST v1, the inference protocol over HTTP or gRPC) parse requests into
pixel rows and call `Predictor.predict`; it queues them on this model
version's batcher and waits for the answer within the deadline. A `Predictor`
is one served model version: its card, its onnxruntime session behind the
batcher. No HTTP here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.batching import MicroBatcher
from service.errors import Overloaded
from service.model import LoadedModelInfo


@dataclass(frozen=True)
class Predictions:
    """Results for n images, in the order they were sent."""

    probabilities: np.ndarray  # (n, 10) float32
    digits: np.ndarray  # (n,) int64
    confidences: np.ndarray  # (n,) float32


class Predictor:
    def __init__(self, batcher: MicroBatcher, model: LoadedModelInfo, *, timeout_s: float):
        self.batcher = batcher
        self.model = model
        self.timeout_s = timeout_s
        # What every answer names: which model and version produced it.
        self.ref: dict[str, object] = {"name": model.name, "version": model.version}

    def check_capacity(self) -> None:
        """Refuse at once when the queue is full, before any image is decoded:
        under overload the 429 must be cheap, or the refusals eat the capacity."""
        if not self.batcher.has_room():
            raise Overloaded(waiting_rows=self.batcher.queued_rows)

    async def predict(
        self,
        rows: np.ndarray,
        *,
        timeout_s: float | None = None,
        abandoned: Callable[[], bool] | None = None,
    ) -> Predictions:
        """`rows`: (n, 784) pixel intensities 0..255, white digit on black (any numeric
        dtype; converted to float32 once, in the batch). `timeout_s` can only shorten
        the deadline; `abandoned` tells whether the caller has gone."""
        deadline = self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)
        probabilities = await self.batcher.submit(rows, timeout_s=deadline, abandoned=abandoned)
        digits = probabilities.argmax(axis=1)
        confidences = probabilities[np.arange(len(digits)), digits]
        return Predictions(probabilities, digits, confidences)
