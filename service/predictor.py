"""From validated pixels to predictions: the one path every endpoint shares.

Routes parse requests into (n, 28, 28) float32 pixel arrays and call
`Predictor.predict`; it queues them on the batcher, waits within the deadline,
and records what was predicted. No HTTP here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.batching import MicroBatcher, UnbatchedRunner
from service.errors import Overloaded
from service.metrics import ServiceMetrics
from service.model import PIXELS, LoadedModelInfo


@dataclass(frozen=True)
class Predictions:
    """Results for n images, in the order they were sent."""

    probabilities: np.ndarray  # (n, 10) float32
    digits: np.ndarray  # (n,) int64
    confidences: np.ndarray  # (n,) float32


class Predictor:
    def __init__(
        self,
        runner: MicroBatcher | UnbatchedRunner,
        model: LoadedModelInfo,
        metrics: ServiceMetrics,
        *,
        timeout_s: float,
    ) -> None:
        self.runner = runner
        self.model = model
        self.metrics = metrics
        self.timeout_s = timeout_s

    def check_capacity(self) -> None:
        """Refuse at once when the queue is full, before any image is decoded:
        under overload the 429 must be cheap, or the refusals eat the capacity."""
        if self.runner.queued_rows >= self.runner.max_queue_rows:
            raise Overloaded(
                f"the queue is full ({self.runner.queued_rows} images waiting); retry in a second"
            )

    async def predict(self, pixels: np.ndarray, *, timeout_s: float | None = None) -> Predictions:
        """`pixels`: (n, 28, 28) or (n, 784), 0..255, white digit on black."""
        rows = np.ascontiguousarray(pixels, dtype=np.float32).reshape(len(pixels), PIXELS)
        deadline = self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)
        probabilities = await self.runner.submit(rows, timeout_s=deadline)
        digits = probabilities.argmax(axis=1)
        confidences = probabilities[np.arange(len(digits)), digits]
        self.metrics.record_predictions(digits, confidences)
        return Predictions(probabilities, digits, confidences)
