"""Poll mode: the repository is followed without a request, never half-written.

Most tests call `ModelControl.poll()` themselves (the background interval is an
hour), so each poll happens exactly where the test says; the last one checks
that the background task polls on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.config import Settings
from service.lifecycle import Lifecycle
from service.metrics import ServiceMetrics
from service.model_card import read_card
from service.model_control import ModelControl
from service.registry import ModelRegistry
from tests.service.repository_support import (
    NAME,
    add_version,
    new_repository,
    remove_version,
    stage_version,
)

pytestmark = pytest.mark.anyio
HOUR = 3600.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return new_repository(tmp_path)


@pytest.fixture
async def make_control(repository: Path) -> AsyncIterator[Any]:
    controls: list[ModelControl] = []

    async def make(poll_s: float = HOUR, **overrides: Any) -> ModelControl:
        settings = Settings.model_validate(
            {"model_repository": repository, "repository_poll_s": poll_s, **overrides}
        )
        metrics = ServiceMetrics(max_batch_size=8, low_confidence_threshold=0.5)
        control = ModelControl(settings, ModelRegistry(NAME), metrics, Lifecycle())
        await control.start()
        controls.append(control)
        return control

    yield make
    for control in controls:
        await control.stop()


def served(control: ModelControl) -> list[int]:
    return [p.model.version for p in control.registry.served()]


def states(control: ModelControl) -> dict[str, tuple[str, str]]:
    return {e["version"]: (e["state"], e["reason"]) for e in control.index()}


def failed_loads(control: ModelControl, version: int) -> float:
    """`mnist_model_loads_total{outcome="failed"}` from the exposition text."""
    text = control.metrics.render()[0].decode()
    wanted = {"version": str(version), "outcome": "failed"}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mnist_model_loads_total" and sample.labels == wanted:
                return float(sample.value)
    return 0.0


async def test_a_version_being_copied_is_not_loaded_until_its_folder_settles(
    repository: Path, make_control: Any
) -> None:
    control = await make_control()
    staged = stage_version(repository, 2)
    card = read_card(staged)
    served_file = staged / card.variants[card.serving_variant or ""].file
    target = repository / NAME / "2"
    target.mkdir()  # a plain copy in progress: card first, the model half written
    (target / "model.json").write_bytes((staged / "model.json").read_bytes())
    data = served_file.read_bytes()
    (target / served_file.name).write_bytes(data[: len(data) // 2])

    await control.poll()
    assert served(control) == [1]
    assert states(control)["2"][1] == "not loaded yet: its folder changed since last poll"
    (target / served_file.name).write_bytes(data)  # the copy goes on
    for file in staged.iterdir():
        if not (target / file.name).exists():
            (target / file.name).write_bytes(file.read_bytes())
    await control.poll()
    assert served(control) == [1], "still changing at this poll: nothing is loaded"
    assert failed_loads(control, 2) == 0, "the half-written folder was never even tried"

    await control.poll()  # unchanged since the previous poll: now it is loaded
    assert served(control) == [2]
    assert states(control)["2"] == ("READY", "")


async def test_a_stalled_copy_fails_its_checksum_once_and_the_old_keeps_serving(
    repository: Path, make_control: Any
) -> None:
    control = await make_control()
    add_version(repository, 2, corrupt=True)  # stands for a copy that stopped half-way
    for _ in range(4):
        await control.poll()
    assert served(control) == [1]
    state, reason = states(control)["2"]
    assert state == "UNAVAILABLE" and "does not match its card" in reason
    assert failed_loads(control, 2) == 1, "not retried while its files stay the same"

    remove_version(repository, 2)
    add_version(repository, 2)  # a good copy replaces it
    await control.poll()
    await control.poll()
    assert served(control) == [2]


async def test_rollback_by_removing_the_newest_and_unload_stops_following(
    repository: Path, make_control: Any
) -> None:
    control = await make_control(version_policy="latest:2")
    add_version(repository, 2)
    add_version(repository, 3)
    await control.poll()
    await control.poll()
    assert served(control) == [2, 3]
    remove_version(repository, 3)
    await control.poll()
    await control.poll()
    assert served(control) == [1, 2]

    await control.unload(NAME)
    add_version(repository, 4)
    for _ in range(3):
        await control.poll()
    assert served(control) == [], "unloaded on request: polling does not bring it back"
    assert await control.load(NAME) == [2, 4]


async def test_removing_every_version_keeps_the_last_served(
    repository: Path, make_control: Any
) -> None:
    control = await make_control()
    remove_version(repository, 1)
    await control.poll()
    await control.poll()
    assert served(control) == [1], "an empty repository is a mistake, not an unload"


async def test_the_background_task_polls_on_its_own(repository: Path, make_control: Any) -> None:
    control = await make_control(poll_s=0.02)
    add_version(repository, 2)
    for _ in range(500):  # bounded: the poller is a background task with its own period
        if served(control) == [2]:
            break
        await asyncio.sleep(0.02)
    assert served(control) == [2]
