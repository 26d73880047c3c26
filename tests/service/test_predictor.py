"""The predictor: digits and confidences from the batcher, and a cheap refusal when full."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from service.batching import MicroBatcher
from service.errors import DeadlineExceeded, Overloaded
from service.model import LoadedModelInfo
from service.model_card import read_card
from service.predictor import Predictor
from tests.conftest import MODELS

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class GatedModel:
    """Answers digit = first pixel % 10 with probability 0.9, once the gate opens."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(5), "the test never opened the gate"
        out = np.full((len(rows), 10), 0.1 / 9, dtype=np.float32)
        out[np.arange(len(rows)), rows[:, 0].astype(int) % 10] = 0.9
        return out


def info() -> LoadedModelInfo:
    card = read_card(MODELS / "mnist-mlp" / "1")
    return LoadedModelInfo("m", 1, "base", "0" * 64, Path("m.onnx"), card, 0.0)


def rows(*firsts: int) -> np.ndarray:
    pixels = np.zeros((len(firsts), 784), dtype=np.float32)
    pixels[:, 0] = firsts
    return pixels


async def test_predictions_carry_digits_and_confidences() -> None:
    model = GatedModel()
    model.gate.set()
    batcher = MicroBatcher(model, max_batch_size=8, max_queue_delay_s=0.0, max_queue_rows=16)
    await batcher.start()
    result = await Predictor(batcher, info(), timeout_s=5.0).predict(rows(3, 14, 7))
    await batcher.stop()
    assert result.digits.tolist() == [3, 4, 7]
    assert np.allclose(result.confidences, 0.9)
    assert result.probabilities.shape == (3, 10)


async def test_check_capacity_refuses_when_the_queue_is_full() -> None:
    model = GatedModel()
    batcher = MicroBatcher(model, max_batch_size=1, max_queue_delay_s=0.0, max_queue_rows=2)
    await batcher.start()
    predictor = Predictor(batcher, info(), timeout_s=5.0)
    predictor.check_capacity()  # empty queue: fine
    running = asyncio.ensure_future(predictor.predict(rows(1)))
    assert await asyncio.to_thread(model.entered.wait, 2)  # held inside the model
    waiting = [asyncio.ensure_future(predictor.predict(rows(i))) for i in (2, 3)]
    await asyncio.sleep(0)  # let both queue their rows
    with pytest.raises(Overloaded) as refused:
        predictor.check_capacity()
    assert refused.value.headers["Retry-After"] == "1"
    model.gate.set()
    done = await asyncio.gather(running, *waiting)
    assert [r.digits.tolist() for r in done] == [[1], [2], [3]]
    predictor.check_capacity()  # room again
    await batcher.stop()


async def test_a_shorter_client_deadline_wins() -> None:
    model = GatedModel()
    batcher = MicroBatcher(model, max_batch_size=1, max_queue_delay_s=0.0, max_queue_rows=4)
    await batcher.start()
    predictor = Predictor(batcher, info(), timeout_s=30.0)
    with pytest.raises(DeadlineExceeded):
        await predictor.predict(rows(1), timeout_s=0.01)
    model.gate.set()
    await batcher.stop()
