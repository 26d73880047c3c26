"""Which model versions this worker serves, and how that changes without a failed request.

At start the version policy picks versions from the repository. Later the set
changes on request (the repository API's load and unload, `service.api.repository`),
by polling the repository (`repository_poll_s`, Triton's poll mode), or because
another worker of this server published a change (`service.worker_sync`).

Every change goes the same way, one at a time:

1. Pick the folders (policy, or the exact versions another worker published).
2. Keep the versions already served from the same file; for each other one,
   in a thread (the event loop keeps answering): check the card (sha256,
   input and output shapes), build the session, run a warm-up inference.
3. Only if every new version passed: start its batcher (its own queue and
   session; its metrics carry its version) and swap the served set in one
   assignment. Versions that left are retired: requests already on them
   finish there, and each is released when its last request is done
   (`service.registry`).

A failure at step 2 changes nothing: the served set stays as it was, and the
reason is logged, counted (`mnist_model_loads_total{outcome="failed"}`), shown
in the repository index (UNAVAILABLE with the reason) and, for an API request,
answered with 400.

Polling only acts once the model's folder looked the same on two polls in a
row, so a version still being copied is never loaded half-written; a version
whose files do not match their card's sha256 fails its check instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from service.config import Settings
from service.errors import LoadFailed, ModelLoadError, NotFound
from service.lifecycle import Lifecycle
from service.metrics import ServiceMetrics
from service.model import (
    OnnxModel,
    read_checked_card,
    resolve_version_dir,
    selected_folders,
    served_file,
)
from service.predictor import Predictor
from service.registry import ModelRegistry
from service.version_loader import open_version, start_predictor
from service.versions import Fingerprint, VersionPolicy, snapshot, version_folders
from service.worker_sync import DesiredState, WorkerSync

log = logging.getLogger("service.models")

FOLLOW_INTERVAL_S = 0.2  # how often a worker checks whether another published a change


class ModelControl:
    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        metrics: ServiceMetrics,
        lifecycle: Lifecycle,
        sync: WorkerSync | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.sync = sync
        self.default_policy = settings.served_policy()
        self.policy = self.default_policy  # the last load request's policy, kept for polling
        self.polling = settings.repository_poll_s > 0
        self._lock = asyncio.Lock()  # one change at a time
        self._loading: set[int] = set()
        self._failures: dict[int, str] = {}  # version -> why its last load failed
        self._generation = 0  # the shared desired state this worker has applied
        self._seen: dict[int, Fingerprint] | None = None  # the last poll's snapshot
        self._acted_on: dict[int, Fingerprint] | None = None  # the snapshot last acted upon
        self._task: asyncio.Task[None] | None = None
        self._started = False  # readiness is the lifespan's to set until start() is done

    @property
    def repository(self) -> Path:
        return self.settings.model_repository

    # -- lifespan ---------------------------------------------------------------------
    async def start(self) -> None:
        """Load what to serve: what the other workers serve, else what the policy picks.
        Raises `ModelLoadError` (the process does not start) when nothing can be loaded."""
        desired = None
        if self.sync is not None:
            self.sync.confirm(0)  # registered first: from now on publishers wait for us too
            desired = self.sync.read()
        if desired is not None:
            try:
                await self._follow(desired)
            except LoadFailed as error:  # e.g. files changed since: serve the policy's pick
                log.warning("cannot serve the published versions", extra={"error": str(error)})
                desired = None
        if desired is None:
            folders = selected_folders(self.repository, self.registry.name, self.policy)
            try:
                await self._serve(folders)
            except LoadFailed as error:
                raise ModelLoadError(error.message) from None
        self._started = True
        if self.polling:
            self._seen = self._acted_on = snapshot(self.repository, self.registry.name)
        if self.polling or self.sync is not None:
            self._task = asyncio.create_task(self._watch(), name="model-control")

    async def stop(self) -> None:
        """Stop watching; stop every batcher after it finished the rows it accepted."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.sync is not None:
            self.sync.leave()
        await self.registry.close()

    # -- the repository API -------------------------------------------------------------
    async def load(self, name: str, policy: VersionPolicy | None = None) -> list[int]:
        """Load (or reload) `name` with `policy` (default: the configured one) on every
        worker; the served versions. `LoadFailed` leaves everything as it was."""
        self._check_name(name)
        policy = policy or self.default_policy
        async with self._publishing(), self._lock:
            await self._load(policy)
            generation = self._publish(loaded=True)
        await self._wait_for_workers(generation)
        return [p.model.version for p in self.registry.served()]

    async def unload(self, name: str) -> None:
        """Take `name` out of service on every worker (requests in flight still finish)."""
        self._check_name(name)
        async with self._publishing(), self._lock:
            self._unload()
            generation = self._publish(loaded=False)
        await self._wait_for_workers(generation)

    def index(self, *, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: every version present, served or in transit, with
        its state and, unless READY, the reason."""
        name = self.registry.name
        folders = version_folders(self.repository.resolve(), name)
        served = {p.model.version for p in self.registry.served()}
        retiring = set(self.registry.retiring())
        changing = self._changing(folders)
        picked = set(self.policy.select(folders))
        entries = []
        for version in sorted(set(folders) | served | retiring | self._loading):
            if version in served:
                state, reason = "READY", ""
            elif version in self._loading:
                state, reason = "LOADING", "checking the card, building the session, warming up"
            elif version in retiring:
                state, reason = "UNLOADING", "out of service; finishing requests already on it"
            elif version in self._failures:
                state, reason = "UNAVAILABLE", self._failures[version]
            elif self.registry.unloaded:
                state, reason = "UNAVAILABLE", "unloaded"
            elif version in changing:
                state, reason = "UNAVAILABLE", "not loaded yet: its folder changed since last poll"
            elif version in picked:
                when = "at a coming poll" if self.polling else "on the next load request"
                state, reason = "UNAVAILABLE", f"not loaded yet; the policy picks it: loads {when}"
            else:
                state, reason = "UNAVAILABLE", f"not selected by the version policy {self.policy}"
            if ready_only and state != "READY":
                continue
            entry = {"name": name, "version": str(version), "state": state, "reason": reason}
            entries.append(entry)
        return entries

    def _check_name(self, name: str) -> None:
        if name != self.registry.name:
            raise NotFound(
                f"model '{name}' is not in this server's repository; it serves "
                f"'{self.registry.name}'"
            )

    # -- changing the served set ----------------------------------------------------------
    async def _load(self, policy: VersionPolicy) -> None:
        try:
            folders = selected_folders(self.repository, self.registry.name, policy)
        except ModelLoadError as error:
            log.warning("nothing to load; serving set unchanged", extra={"error": str(error)})
            raise LoadFailed(f"nothing to load (nothing changed): {error}") from None
        await self._serve(folders)
        self.policy = policy

    async def _serve(
        self, folders: Mapping[int, Path], shas: Mapping[int, str] | None = None
    ) -> None:
        """Serve exactly `folders` (version -> folder), or raise `LoadFailed` and change
        nothing. `shas`: the file sha256 each version must have (published by a worker)."""
        shas = shas or {}
        served = {p.model.version: p for p in self.registry.served()}
        keep: list[Predictor] = []
        new: dict[int, Path] = {}
        for version, folder in sorted(folders.items()):
            try:
                card = read_checked_card(folder)
                _, sha, _ = served_file(card, folder, self.settings.model_variant)
            except ModelLoadError as error:
                raise self._failed(version, str(error)) from None
            if version in shas and shas[version] != sha:
                raise self._failed(
                    version, f"{folder} changed since the load request (sha256 {sha[:12]}…)"
                )
            current = served.get(version)
            if current is not None and current.model.sha256 == sha:
                keep.append(current)
            else:
                new[version] = folder
        if not new and len(keep) == len(served):
            return  # already serving exactly these
        models = [await self._open(version, folder) for version, folder in new.items()]
        started = [
            await start_predictor(self.settings, m, self.metrics.observer(m.info.version))
            for m in models
        ]
        before = sorted(served)
        self.registry.replace(keep + started)
        self._changed(before)

    def _unload(self) -> None:
        before = [p.model.version for p in self.registry.served()]
        self.registry.replace([])
        self.registry.unloaded = True
        self._changed(before)

    async def _open(self, version: int, folder: Path) -> OnnxModel:
        self._loading.add(version)
        try:
            model = await open_version(self.settings, folder)
        except ModelLoadError as error:
            raise self._failed(version, str(error)) from None
        finally:
            self._loading.discard(version)
        self._failures.pop(version, None)
        self.metrics.load_finished(version, loaded=True)
        return model

    def _failed(self, version: int, reason: str) -> LoadFailed:
        self._failures[version] = f"load failed: {reason}"
        self.metrics.load_finished(version, loaded=False)
        log.warning(
            "version failed to load; serving set unchanged",
            extra={"model": self.registry.name, "version": version, "error": reason},
        )
        return LoadFailed(
            f"version {version} of '{self.registry.name}' failed to load (nothing changed): "
            f"{reason}"
        )

    def _changed(self, before: list[int]) -> None:
        served = self.registry.served()
        self.metrics.serving(
            [(p.model.name, p.model.version, p.model.variant, p.model.sha256) for p in served]
        )
        after = [p.model.version for p in served]
        log.info(
            "serving versions",
            extra={"model": self.registry.name, "versions": after, "before": before},
        )
        if self._started and not self.lifecycle.draining:
            self.lifecycle.ready = self.registry.ready

    # -- other workers and polling ----------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _publishing(self) -> AsyncIterator[None]:
        if self.sync is None:
            yield
            return
        async with self.sync.publishing(self.settings.repository_sync_timeout_s):
            yield

    def _publish(self, *, loaded: bool) -> int:
        if self.sync is None:
            return 0
        versions = {p.model.version: p.model.sha256 for p in self.registry.served()}
        generation = self.sync.publish(loaded=loaded, policy=str(self.policy), versions=versions)
        self._confirm(generation)
        return generation

    async def _wait_for_workers(self, generation: int) -> None:
        if self.sync is not None:
            await self.sync.wait_confirmed(generation, self.settings.repository_sync_timeout_s)

    async def _follow(self, desired: DesiredState) -> None:
        """Serve what another worker published; confirm it (or why not)."""
        async with self._lock:
            try:
                if desired.loaded:
                    folders = {
                        version: resolve_version_dir(self.repository, self.registry.name, version)
                        for version in desired.versions
                    }
                    await self._serve(folders, desired.versions)
                    self.policy = VersionPolicy.parse(desired.policy)
                else:
                    self._unload()
            except (LoadFailed, ModelLoadError) as error:
                self._confirm(desired.generation, str(error))
                raise LoadFailed(str(error)) from None
            self._confirm(desired.generation)

    def _confirm(self, generation: int, error: str | None = None) -> None:
        self._generation = generation
        if self.sync is not None:
            self.sync.confirm(generation, error)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        poll_s = self.settings.repository_poll_s
        next_poll = loop.time() + poll_s
        interval = FOLLOW_INTERVAL_S if self.sync is not None else poll_s
        if self.polling:
            interval = min(interval, poll_s)
        while True:
            await asyncio.sleep(interval)  # a background task's period, not a synchronisation
            try:
                if self.sync is not None:
                    desired = self.sync.read()
                    if desired is not None and desired.generation > self._generation:
                        with contextlib.suppress(LoadFailed):  # logged, confirmed as failed
                            await self._follow(desired)
                if self.polling and loop.time() >= next_poll:
                    next_poll = loop.time() + poll_s
                    await self.poll()
            except Exception:  # a bug here must not stop future reloads
                log.exception("model control failed; trying again later")

    async def poll(self) -> None:
        """One poll (the watch task calls it every `repository_poll_s`): act on the
        repository once it looked the same as at the previous poll."""
        if self.registry.unloaded:
            return  # unloaded on request: only a load request brings it back
        seen = snapshot(self.repository.resolve(), self.registry.name)
        if seen != self._seen:
            self._seen = seen  # still changing, or just changed: decide next time
            return
        if seen == self._acted_on:
            return
        self._acted_on = seen
        async with self._lock:
            with contextlib.suppress(LoadFailed):  # logged, counted, shown in the index
                await self._load(self.policy)

    def _changing(self, folders: Mapping[int, Path]) -> set[int]:
        """Versions polling has not acted upon yet because their files changed."""
        if not self.polling or self._acted_on is None:
            return set()
        current = snapshot(self.repository.resolve(), self.registry.name)
        return {v for v in folders if current.get(v) != self._acted_on.get(v)}
