"""Workers converge on the serving set through the shared state folder.

Several `ModelControl`s in one event loop stand for the workers of a server:
each gets its own registry and a distinct live pid, and they share one
state folder, as `--workers N` sets up. (The real multi-process case is in
test_hot_reload.py.)
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.errors import LoadFailed, WorkersDiverged
from service.lifecycle import Lifecycle
from service.metrics import ServiceMetrics
from service.model_control import ModelControl
from service.registry import ModelRegistry
from service.worker_sync import WorkerSync
from tests.service.repository_support import NAME, add_version, new_repository

pytestmark = pytest.mark.anyio
LIVE_PIDS = [os.getpid(), os.getppid(), 1]  # distinct processes that exist


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return new_repository(tmp_path)


@pytest.fixture
async def start_worker(repository: Path, tmp_path: Path) -> AsyncIterator[Any]:
    controls: list[ModelControl] = []

    async def start(**overrides: Any) -> ModelControl:
        settings = Settings.model_validate(
            {"model_repository": repository, "repository_state_dir": tmp_path / "state",
             **overrides}
        )  # fmt: skip
        sync = WorkerSync(tmp_path / "state", pid=LIVE_PIDS[len(controls)])
        metrics = ServiceMetrics(max_batch_size=8, low_confidence_threshold=0.5)
        control = ModelControl(settings, ModelRegistry(NAME), metrics, Lifecycle(), sync)
        await control.start()
        controls.append(control)
        return control

    yield start
    for control in reversed(controls):
        await control.stop()


def served(control: ModelControl) -> list[int]:
    return [p.model.version for p in control.registry.served()]


async def test_a_load_on_one_worker_reaches_the_others_before_it_answers(
    repository: Path, start_worker: Any
) -> None:
    first, second = await start_worker(), await start_worker()
    add_version(repository, 2)
    assert await first.load(NAME) == [2]
    assert served(second) == [2], "load answered before every worker served the new set"

    await second.unload(NAME)
    assert served(first) == [] and served(second) == []

    assert await first.load(NAME) == [2]
    third = await start_worker()  # a worker (re)started later follows the shared state
    assert served(third) == [2]
    await third.unload(NAME)
    assert served(first) == served(second) == []


async def test_a_failed_load_is_not_published(repository: Path, start_worker: Any) -> None:
    first, second = await start_worker(), await start_worker()
    add_version(repository, 2, corrupt=True)
    with pytest.raises(LoadFailed, match="does not match its card"):
        await first.load(NAME)
    assert served(first) == served(second) == [1]
    assert WorkerSync(repository.parent / "state").read() is None


async def test_a_worker_that_does_not_confirm_makes_the_load_fail_loudly(
    repository: Path, start_worker: Any, tmp_path: Path
) -> None:
    first = await start_worker(repository_sync_timeout_s=0.2)
    silent = tmp_path / "state" / f"worker-{os.getppid()}.json"  # alive, never follows
    silent.write_text(json.dumps({"pid": os.getppid(), "generation": 0, "error": None}))
    add_version(repository, 2)
    with pytest.raises(WorkersDiverged, match=rf"worker\(s\) \[{os.getppid()}\] did not confirm"):
        await first.load(NAME)
    assert served(first) == [2], "applied here; the answer says the others did not follow"
