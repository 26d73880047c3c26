"""The predictor refuses work at once when the queue is full, before decoding anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.batching import UnbatchedRunner
from service.errors import Overloaded
from service.metrics import ServiceMetrics
from service.model import LoadedModelInfo
from service.model_card import read_card
from service.predictor import Predictor
from tests.conftest import MODELS


def test_check_capacity_refuses_when_the_queue_is_full() -> None:
    runner = UnbatchedRunner(lambda rows: np.zeros((len(rows), 10), np.float32), max_queue_rows=4)
    card = read_card(MODELS / "mnist-mlp" / "1")
    info = LoadedModelInfo("m", 1, "base", "0" * 64, Path("m.onnx"), card, 0.0)
    metrics = ServiceMetrics(max_batch_size=4, low_confidence_threshold=0.5)
    predictor = Predictor(runner, info, metrics, timeout_s=1.0)
    predictor.check_capacity()  # empty queue: fine
    runner._queued_rows = 4  # as if four images were waiting
    with pytest.raises(Overloaded) as refused:
        predictor.check_capacity()
    assert refused.value.headers["Retry-After"] == "1"
