"""The micro-batcher against a fake model, with millisecond timings."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest

from service.batching import INLINE_BUDGET_S, MicroBatcher
from service.errors import (
    DeadlineExceeded,
    InferenceFailed,
    Overloaded,
    PayloadTooLarge,
    ShuttingDown,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeModel:
    """Echoes each row's first pixel into column 0, so results can be traced to inputs."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.threads: list[str] = []  # where each batch ran: "MainThread" (the loop) or "inference"
        self.seconds = 0.0  # how long each call takes (a slow model)
        self.gate: threading.Event | None = None  # set to hold inference until released
        self.entered = threading.Event()  # set when a batch is inside the model
        self.fail_next = False

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(5), "test never released the model"
        self.calls.append(len(pixels))
        self.threads.append(threading.current_thread().name)
        if self.seconds:
            time.sleep(self.seconds)  # stands in for a model's compute time, not for syncing
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        out = np.zeros((len(pixels), 10), dtype=np.float32)
        out[:, 0] = pixels[:, 0]
        return out


def rows(*ids: int) -> np.ndarray:
    pixels = np.zeros((len(ids), 784), dtype=np.float32)
    pixels[:, 0] = ids
    return pixels


@pytest.fixture
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
async def make_batcher(model: FakeModel) -> AsyncIterator[Callable[..., MicroBatcher]]:
    made: list[MicroBatcher] = []

    def make(**options: float) -> MicroBatcher:
        settings = {
            "max_batch_size": 8,
            "max_queue_delay_s": 0.005,
            "max_queue_rows": 64,
            "loop_budget_s": INLINE_BUDGET_S,  # the service's default
        }
        settings.update(options)
        batcher = MicroBatcher(
            model,
            max_batch_size=int(settings["max_batch_size"]),
            max_queue_delay_s=settings["max_queue_delay_s"],
            max_queue_rows=int(settings["max_queue_rows"]),
            loop_budget_s=settings["loop_budget_s"],
        )
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        await batcher.stop()


async def test_full_batch_flushes_without_waiting_for_the_delay(
    make_batcher: Callable[..., MicroBatcher], model: FakeModel
) -> None:
    batcher = make_batcher(max_batch_size=4, max_queue_delay_s=10.0)
    await batcher.start()
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(rows(i)) for i in range(4))), timeout=2
    )
    assert model.calls == [4]
    assert [int(r[0, 0]) for r in results] == [0, 1, 2, 3]


async def test_partial_batch_flushes_when_the_oldest_row_is_due(
    make_batcher: Callable[..., MicroBatcher], model: FakeModel
) -> None:
    batcher = make_batcher(max_batch_size=64, max_queue_delay_s=0.02)
    await batcher.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(batcher.submit(rows(i)) for i in range(3)))
    waited = loop.time() - started
    assert model.calls == [3]
    assert 0.015 <= waited < 1.0
    assert [int(r[0, 0]) for r in results] == [0, 1, 2]


async def test_results_keep_request_and_row_order(
    make_batcher: Callable[..., MicroBatcher],
) -> None:
    batcher = make_batcher(max_batch_size=5, max_queue_delay_s=0.002)
    await batcher.start()
    requests = [
        rows(*range(start, start + size)) for start, size in [(0, 3), (3, 1), (4, 7), (11, 2)]
    ]
    results = await asyncio.gather(*(batcher.submit(r) for r in requests))
    for sent, got in zip(requests, results, strict=True):
        assert got.shape == (len(sent), 10)
        assert list(got[:, 0]) == list(sent[:, 0])


async def test_a_large_request_is_split_across_batches_and_merged(
    make_batcher: Callable[..., MicroBatcher], model: FakeModel
) -> None:
    batcher = make_batcher(max_batch_size=32, max_queue_delay_s=0.002)
    await batcher.start()
    big, small = rows(*range(40)), rows(100, 101, 102)
    results = await asyncio.gather(
        batcher.submit(big),
        *(batcher.submit(rows(i)) for i in (200, 201, 202)),
        batcher.submit(small),
    )
    assert max(model.calls) <= 32
    assert sum(model.calls) == 40 + 3 + 3
    assert list(results[0][:, 0]) == list(range(40))
    assert [int(r[0, 0]) for r in results[1:4]] == [200, 201, 202]
    assert list(results[4][:, 0]) == [100, 101, 102]


async def test_inference_failure_fails_that_batch_only(
    make_batcher: Callable[..., MicroBatcher], model: FakeModel
) -> None:
    batcher = make_batcher(max_batch_size=2, max_queue_delay_s=0.001)
    await batcher.start()
    model.fail_next = True
    first = await asyncio.gather(
        batcher.submit(rows(1)), batcher.submit(rows(2)), return_exceptions=True
    )
    assert all(isinstance(r, InferenceFailed) for r in first)
    assert "boom" in str(first[0])
    again = await batcher.submit(rows(3))
    assert int(again[0, 0]) == 3


async def test_full_queue_rejects_at_once_with_retry_after(
    make_batcher: Callable[..., MicroBatcher], model: FakeModel
) -> None:
    model.gate = threading.Event()
    batcher = make_batcher(max_batch_size=2, max_queue_delay_s=0.0, max_queue_rows=4)
    await batcher.start()
    running = asyncio.ensure_future(batcher.submit(rows(0, 1)))
    assert await asyncio.to_thread(model.entered.wait, 2)  # that batch is held in the model
    waiting = [asyncio.ensure_future(batcher.submit(rows(i, i))) for i in (2, 3)]
    await asyncio.sleep(0)
    assert batcher.queued_rows == 4
    with pytest.raises(Overloaded) as refused:
        await batcher.submit(rows(9))
    assert refused.value.headers["Retry-After"] == "1"
    with pytest.raises(PayloadTooLarge):
        await batcher.submit(rows(*range(5)))
    model.gate.set()
    await asyncio.gather(running, *waiting)


async def test_deadline_answers_504_and_frees_the_slot(
    make_batcher: Callable[..., MicroBatcher], model: FakeModel
) -> None:
    model.gate = threading.Event()
    batcher = make_batcher(max_batch_size=1, max_queue_delay_s=0.0, max_queue_rows=2)
    await batcher.start()
    blocker = asyncio.ensure_future(batcher.submit(rows(0)))
    assert await asyncio.to_thread(model.entered.wait, 2)  # held in the model
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(rows(1, 2), timeout_s=0.01)
    assert batcher.queued_rows == 0  # the timed-out rows no longer hold the queue
    model.gate.set()
    await blocker
    await batcher.submit(rows(3))
    assert model.calls == [1, 1]  # the abandoned request never reached the model


async def test_cancelled_requests_are_dropped_from_the_batch(
    make_batcher: Callable[..., MicroBatcher], model: FakeModel
) -> None:
    batcher = make_batcher(max_batch_size=8, max_queue_delay_s=0.03)
    await batcher.start()
    kept = asyncio.ensure_future(batcher.submit(rows(1)))
    gone = asyncio.ensure_future(batcher.submit(rows(2, 3, 4)))
    await asyncio.sleep(0)
    gone.cancel()
    result = await kept
    assert int(result[0, 0]) == 1
    assert model.calls == [1]


async def test_stop_finishes_accepted_work_then_refuses(
    make_batcher: Callable[..., MicroBatcher], model: FakeModel
) -> None:
    batcher = make_batcher(max_batch_size=64, max_queue_delay_s=10.0)
    await batcher.start()
    pending = [asyncio.ensure_future(batcher.submit(rows(i))) for i in range(5)]
    await asyncio.sleep(0)
    await asyncio.wait_for(batcher.stop(), timeout=2)
    assert [int((await p)[0, 0]) for p in pending] == [0, 1, 2, 3, 4]
    with pytest.raises(ShuttingDown):
        await batcher.submit(rows(9))


async def test_unmerged_batcher_makes_one_call_per_request(model: FakeModel) -> None:
    runner = MicroBatcher(
        model, max_batch_size=1, max_queue_delay_s=0.0, max_queue_rows=8, merge_requests=False
    )
    await runner.start()
    results = await asyncio.gather(*(runner.submit(rows(i, i + 1)) for i in range(3)))
    assert model.calls == [2, 2, 2]
    assert [list(r[:, 0]) for r in results] == [[0, 1], [1, 2], [2, 3]]
    await runner.stop()
    with pytest.raises(ShuttingDown):
        await runner.submit(rows(1))


async def measured_cheap(make: Callable[..., MicroBatcher], *, max_batch_size: int) -> MicroBatcher:
    """A started batcher whose first call (row 0, on the inference thread, where an
    unmeasured model goes) found the model cheap enough for the event loop; the
    budget is generous so no scheduling hiccup on a busy machine changes that."""
    batcher = make(max_batch_size=max_batch_size, max_queue_delay_s=0.0, loop_budget_s=1.0)
    await batcher.start()
    await batcher.submit(rows(0))
    return batcher


async def test_a_cheap_model_runs_on_the_event_loop_still_one_batch_per_turn(
    make_batcher: Callable[..., MicroBatcher], model: FakeModel
) -> None:
    batcher = await measured_cheap(make_batcher, max_batch_size=8)
    results = await asyncio.gather(*(batcher.submit(rows(i)) for i in range(1, 6)))
    assert [int(r[0, 0]) for r in results] == [1, 2, 3, 4, 5]
    assert model.calls == [1, 5]  # everything submitted in one loop turn: one batch
    assert model.threads == ["inference", threading.current_thread().name]


async def test_rows_over_one_batch_run_on_the_loop_in_later_turns_none_lost(
    make_batcher: Callable[..., MicroBatcher], model: FakeModel
) -> None:
    batcher = await measured_cheap(make_batcher, max_batch_size=4)
    results = await asyncio.gather(*(batcher.submit(rows(i, i)) for i in range(1, 6)))
    assert [list(r[:, 0]) for r in results] == [[i, i] for i in range(1, 6)]
    assert model.calls == [1, 4, 4, 2]
    assert batcher.queued_rows == 0


async def test_a_failure_on_the_loop_fails_that_batch_only(
    make_batcher: Callable[..., MicroBatcher], model: FakeModel
) -> None:
    batcher = await measured_cheap(make_batcher, max_batch_size=8)
    model.fail_next = True
    failed = await asyncio.gather(
        *(batcher.submit(rows(i)) for i in (1, 2)), return_exceptions=True
    )
    assert all(isinstance(r, InferenceFailed) for r in failed)
    assert int((await batcher.submit(rows(3)))[0, 0]) == 3
    assert model.threads[1:] == [threading.current_thread().name] * 2


async def test_a_slow_model_stays_on_the_inference_thread(
    make_batcher: Callable[..., MicroBatcher], model: FakeModel
) -> None:
    model.seconds = 0.005  # over the loop's budget (1 ms) for one batch
    batcher = make_batcher(max_batch_size=8, max_queue_delay_s=0.0)
    await batcher.start()
    for i in range(3):
        assert int((await batcher.submit(rows(i)))[0, 0]) == i
    assert model.threads == ["inference"] * 3
