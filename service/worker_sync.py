"""How the workers of one server converge on the serving set the repository API asked for.

With `--workers N` each worker process serves its own copy of the models, and
a load or unload request reaches just one of them. That worker applies the
request first (a failure changes nothing anywhere), then writes the *desired
state* — loaded or not, the version policy, and the exact versions with the
sha256 of the file each serves — to `desired.json` in a folder the workers
share (`repository_state_dir`). It writes a temporary file and renames it over
the old one, so a reader sees the old state or the new one, never half of one.

Every worker checks that file a few times a second; when its generation is
newer than what it serves, it loads exactly those versions (checking their
sha256 against the published one, so a folder changed in between is refused,
not silently served) and writes `worker-<pid>.json` with the generation it now
serves. The worker that took the request answers once every live worker has
confirmed, or with an error after `repository_sync_timeout_s`.

Publishers hold an exclusive `flock` on `lock`, so two requests reaching two
workers at once get distinct generations; the lock is taken without blocking
the event loop, so a waiting worker keeps serving and keeps following others.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from service.errors import WorkersDiverged

DESIRED = "desired.json"
LOCK = "lock"
CHECK_INTERVAL_S = 0.02  # while waiting for a lock or for other workers' confirmations


@dataclass(frozen=True)
class DesiredState:
    generation: int
    loaded: bool
    policy: str
    versions: dict[int, str]  # version -> sha256 of the file it serves


def write_atomically(path: Path, content: str) -> None:
    """Write beside `path`, then rename over it: readers never see a partial file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(content)
    temporary.replace(path)


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class WorkerSync:
    """One worker's view of the shared folder."""

    def __init__(self, folder: Path, pid: int | None = None) -> None:
        self.folder = folder
        self.pid = pid if pid is not None else os.getpid()
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def own_file(self) -> Path:
        return self.folder / f"worker-{self.pid}.json"

    def read(self) -> DesiredState | None:
        """The published desired state, or None if nothing was published yet."""
        try:
            raw = json.loads((self.folder / DESIRED).read_text())
        except FileNotFoundError:
            return None
        return DesiredState(
            generation=int(raw["generation"]),
            loaded=bool(raw["loaded"]),
            policy=str(raw["policy"]),
            versions={int(v): str(sha) for v, sha in raw["versions"].items()},
        )

    @contextlib.asynccontextmanager
    async def publishing(self, timeout_s: float) -> AsyncIterator[None]:
        """Hold the publish lock (polled without blocking, so cancelling is safe)."""
        with (self.folder / LOCK).open("a") as handle:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise WorkersDiverged(
                            "another load or unload is still in progress; retry"
                        ) from None
                    await asyncio.sleep(CHECK_INTERVAL_S)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def publish(self, *, loaded: bool, policy: str, versions: dict[int, str]) -> int:
        """Write the next generation of the desired state (hold `publishing`); its number."""
        current = self.read()
        generation = (current.generation if current else 0) + 1
        state = {
            "generation": generation,
            "loaded": loaded,
            "policy": policy,
            "versions": {str(v): sha for v, sha in sorted(versions.items())},
            "published_by": self.pid,
        }
        write_atomically(self.folder / DESIRED, json.dumps(state, indent=2) + "\n")
        return generation

    def confirm(self, generation: int, error: str | None = None) -> None:
        """Tell the others this worker has applied `generation`, or with `error` why it
        could not (it then keeps serving what it served; it does not retry)."""
        state = {"pid": self.pid, "generation": generation, "error": error}
        write_atomically(self.own_file, json.dumps(state) + "\n")

    def leave(self) -> None:
        self.own_file.unlink(missing_ok=True)

    def workers(self) -> dict[int, tuple[int, str | None]]:
        """Live workers: pid -> (last generation applied, error if it could not)."""
        found = {}
        for path in self.folder.glob("worker-*.json"):
            try:
                raw = json.loads(path.read_text())
            except (OSError, ValueError):  # removed as we read it
                continue
            pid = int(raw["pid"])
            if is_alive(pid):
                found[pid] = (int(raw["generation"]), raw.get("error"))
            else:  # a worker that died without leaving: its restart registers anew
                path.unlink(missing_ok=True)
        return found

    async def wait_confirmed(self, generation: int, timeout_s: float) -> None:
        """Until every live worker serves `generation` (or a newer one)."""
        deadline = time.monotonic() + timeout_s
        while True:
            workers = self.workers()
            failed = {
                pid: error for pid, (gen, error) in workers.items() if error and gen >= generation
            }
            if failed:
                details = "; ".join(f"worker {pid}: {error}" for pid, error in failed.items())
                raise WorkersDiverged(
                    f"applied by this worker but not by {len(failed)} other(s), which keep their "
                    f"previous versions: {details}"
                )
            waiting = sorted(pid for pid, (gen, _) in workers.items() if gen < generation)
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise WorkersDiverged(
                    f"applied by this worker, but worker(s) {waiting} did not confirm within "
                    f"{timeout_s:g} s; the repository index on each shows its state"
                )
            await asyncio.sleep(CHECK_INTERVAL_S)
