"""The model versions this process serves, and which one answers a request.

Routes ask `resolve(name, version)`: an unversioned request goes to the newest
served version; an unknown model or version is a `NotFound` naming what is
served. Knows nothing of HTTP or of loading (`service.model_control` decides
what is served and calls `replace`).

Replacing the served set is one assignment, so a request sees either the old
set or the new one. A version taken out of service is *retired*, not stopped:
requests that already resolved it (reading their body, queued, running) keep
their reference and finish on it. Its batcher is stopped, and its onnxruntime
session freed, when the last reference to its `Predictor` is gone — the way
Triton holds a model through shared pointers until its last request ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Iterable

from service.batching import MicroBatcher
from service.errors import NotFound
from service.predictor import Predictor

log = logging.getLogger("service.registry")


class ModelRegistry:
    def __init__(self, name: str) -> None:
        self.name = name
        self._versions: dict[int, Predictor] = {}
        self._newest: Predictor | None = None
        self.unloaded = False  # explicitly taken out of service (not just not loaded yet)
        # Out of service but maybe still in use: batcher -> version. Batchers, not
        # predictors: holding a predictor here would keep it in use forever.
        self._retiring: dict[MicroBatcher, int] = {}
        self._stops: set[asyncio.Task[None]] = set()
        self._released = asyncio.Condition()

    def add(self, predictor: Predictor) -> None:
        """Serve one more version (replacing a predictor of the same version)."""
        self.replace([*(p for p in self.served() if p.model.version != predictor.model.version),
                      predictor])  # fmt: skip

    def replace(self, predictors: Iterable[Predictor]) -> None:
        """Serve exactly `predictors` from now on; retire every predictor that leaves."""
        new = {p.model.version: p for p in predictors}
        old, self._versions = self._versions, new
        self._newest = new[max(new)] if new else None
        if new:
            self.unloaded = False
        for version, predictor in old.items():
            if new.get(version) is not predictor:
                self._retire(predictor)

    def served(self) -> list[Predictor]:
        """Every served version, oldest first."""
        return [self._versions[v] for v in sorted(self._versions)]

    @property
    def ready(self) -> bool:
        return self._newest is not None

    def resolve(self, name: str | None = None, version: str | int | None = None) -> Predictor:
        """The predictor for `name` (default: this model) at `version` (default: newest)."""
        if name is not None and name != self.name:
            raise NotFound(f"model '{name}' not found; this server serves '{self.name}'")
        if version is None or version == "":
            if self._newest is None:
                why = "was unloaded" if self.unloaded else "has no version loaded yet"
                raise NotFound(f"model '{self.name}' {why}")
            return self._newest
        try:
            predictor = self._versions.get(int(version))
        except ValueError:
            predictor = None
        if predictor is None:
            served = ", ".join(str(v) for v in sorted(self._versions)) or "none"
            raise NotFound(
                f"model '{self.name}' version '{version}' not found; served versions: {served}"
            )
        return predictor

    # -- retirement ----------------------------------------------------------------
    def retiring(self) -> list[int]:
        """Versions out of service whose last requests are still finishing, ascending."""
        return sorted(self._retiring.values())

    async def wait_released(self, *versions: int) -> None:
        """Until the given retired versions (default: all) have been released."""

        def released() -> bool:
            return not (set(versions or self._retiring.values()) & set(self._retiring.values()))

        async with self._released:
            await self._released.wait_for(released)

    async def close(self) -> None:
        """Stop every batcher, served or retiring; each finishes the rows it accepted."""
        batchers = [p.batcher for p in self.served()] + list(self._retiring)
        self._versions, self._newest = {}, None
        for batcher in batchers:
            await batcher.stop()

    def _retire(self, predictor: Predictor) -> None:
        batcher, version = predictor.batcher, predictor.model.version
        self._retiring[batcher] = version
        loop = asyncio.get_running_loop()
        # The callback must not reference the predictor, or it would never be collected.
        finalizer = weakref.finalize(predictor, self._unused, loop, batcher, version)
        finalizer.atexit = False
        log.info("version retired", extra={"model": self.name, "version": version})

    def _unused(self, loop: asyncio.AbstractEventLoop, batcher: MicroBatcher, version: int) -> None:
        """The last reference to a retired predictor is gone (any thread): stop its batcher."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
            loop.call_soon_threadsafe(self._stop_later, batcher, version)

    def _stop_later(self, batcher: MicroBatcher, version: int) -> None:
        task = asyncio.get_running_loop().create_task(self._release(batcher, version))
        self._stops.add(task)
        task.add_done_callback(self._stops.discard)

    async def _release(self, batcher: MicroBatcher, version: int) -> None:
        await batcher.stop()  # nothing is queued (no one holds the predictor), so this is quick
        async with self._released:
            self._retiring.pop(batcher, None)
            self._released.notify_all()
        log.info("version released", extra={"model": self.name, "version": version})
