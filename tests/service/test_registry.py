"""The registry: which version answers, and how a version leaves service.

A version taken out of service must finish every request already on it (queued,
running, or just resolved and not yet submitted) and be released only when the
last of them is done. Fake models answer "digit = their version", so every
answer shows which version produced it.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from pathlib import Path

import numpy as np
import pytest

from service.batching import MicroBatcher
from service.errors import NotFound, ShuttingDown
from service.model import LoadedModelInfo
from service.model_card import read_card
from service.predictor import Predictor
from service.registry import ModelRegistry
from tests.conftest import MODELS

pytestmark = pytest.mark.anyio
PIXELS = np.full((2, 784), 200, dtype=np.uint8)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class VersionModel:
    """Answers digit = its version; holds each call until `gate` opens."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        out = np.zeros((len(rows), 10), dtype=np.float32)
        out[:, self.version % 10] = 1.0
        return out


async def predictor(model: VersionModel) -> Predictor:
    card = read_card(MODELS / "mnist-mlp" / "1")
    info = LoadedModelInfo("mnist-mlp", model.version, "base", "0" * 64, Path("m.onnx"), card, 0.0)
    batcher = MicroBatcher(model, max_batch_size=8, max_queue_delay_s=0.0, max_queue_rows=64)
    await batcher.start()
    return Predictor(batcher, info, timeout_s=10.0)


async def test_unversioned_requests_go_to_the_newest_and_versions_are_addressable() -> None:
    registry = ModelRegistry("mnist-mlp")
    with pytest.raises(NotFound, match="no version loaded yet"):
        registry.resolve()
    registry.replace([await predictor(VersionModel(1)), await predictor(VersionModel(3))])
    assert registry.resolve().model.version == 3
    assert registry.resolve("mnist-mlp", "1").model.version == 1
    assert registry.resolve(version=3).model.version == 3
    with pytest.raises(NotFound, match="served versions: 1, 3"):
        registry.resolve(version="2")
    with pytest.raises(NotFound, match="serves 'mnist-mlp'"):
        registry.resolve("other")
    assert [p.model.version for p in registry.served()] == [1, 3]
    await registry.close()


async def test_in_flight_requests_finish_on_the_version_they_started_on() -> None:
    registry = ModelRegistry("mnist-mlp")
    old_model, new_model = VersionModel(1), VersionModel(2)
    registry.replace([await predictor(old_model)])
    old_model.gate.clear()  # requests on version 1 now wait inside onnxruntime's place
    running = asyncio.create_task(registry.resolve().predict(PIXELS))
    resolved = registry.resolve()  # a request still reading its body: resolved, not submitted
    await asyncio.to_thread(old_model.entered.wait, 10)  # the request is inside the model

    registry.replace([await predictor(new_model)])
    assert registry.resolve().model.version == 2
    with pytest.raises(NotFound):
        registry.resolve(version=1)
    assert registry.retiring() == [1]

    # New traffic is answered by version 2 while version 1 still holds its requests.
    assert (await registry.resolve().predict(PIXELS)).digits.tolist() == [2, 2]
    queued = asyncio.create_task(resolved.predict(PIXELS))  # submitted after the swap
    old_model.gate.set()
    assert (await running).digits.tolist() == [1, 1]
    assert (await queued).digits.tolist() == [1, 1]
    assert registry.retiring() == [1], "still referenced: not released yet"

    del running, queued, resolved  # the last requests on version 1 are done
    gc.collect()
    await asyncio.wait_for(registry.wait_released(), 10)
    assert registry.retiring() == []
    await registry.close()


async def test_an_unused_version_is_released_at_once_and_close_stops_the_rest() -> None:
    registry = ModelRegistry("mnist-mlp")
    registry.replace([await predictor(VersionModel(1))])
    kept = registry.resolve()  # a request that has not finished with version 1
    registry.replace([await predictor(VersionModel(2))])
    registry.replace([])  # unloaded: nothing serves
    assert not registry.ready
    with pytest.raises(NotFound, match="no version loaded"):
        registry.resolve()
    # Version 2 had no request on it: released without waiting for version 1.
    await asyncio.wait_for(registry.wait_released(2), 10)
    assert registry.retiring() == [1]
    await registry.close()  # shutdown also stops a version still held by a request
    with pytest.raises(ShuttingDown):
        await kept.predict(PIXELS)
