"""A new model version goes live and is rolled back on a running 2-worker server,
driven by unmodified `tritonclient.http`, under load, with zero failed requests.

A bounded load loop posts a handwritten 7 from two threads (one keep-alive
connection, one new connection per request, so both workers get traffic)
while the test copies versions into the repository (written elsewhere, then
renamed) and drives the repository API. Every answer names the version that
produced it; after each load returns, every request sent from then on must be
answered by the version just loaded, on whichever worker it lands.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from evaluation.live_server import LiveServer, live_server
from evaluation.samples import SEVEN_PNG
from service.client import DigitClient
from service.client import main as client_main
from tests.service.repository_support import NAME, add_version, new_repository, remove_version

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

KEY = "rollout-key"
AUTH = {"X-API-Key": KEY}
MAX_REQUESTS = 40_000  # the load loop's bounds, far above what the test needs
MAX_SECONDS = 240.0
AFTER_EACH_CHANGE = 40  # requests that must be answered after each change


@dataclass(frozen=True)
class Outcome:
    sent: float  # time.monotonic() when the request was sent
    status: int | None  # None: no HTTP answer (see error)
    version: int | None
    error: str | None = None


class LoadLoop:
    """Posts the 7 back to back from background threads until stopped (bounded)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.outcomes: list[Outcome] = []
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(fresh,), daemon=True)
            for fresh in (False, True)
        ]
        self.deadline = time.monotonic() + MAX_SECONDS

    def __enter__(self) -> LoadLoop:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _run(self, new_connection_each_time: bool) -> None:
        client = httpx.Client(base_url=self.url, headers=AUTH, timeout=10.0)
        try:
            while not self.stopping.is_set() and time.monotonic() < self.deadline:
                if len(self.outcomes) >= MAX_REQUESTS:
                    break
                if new_connection_each_time:
                    client.close()
                    client = httpx.Client(base_url=self.url, headers=AUTH, timeout=10.0)
                self._record(self._post(client))
        finally:
            client.close()
            with self.changed:
                self.changed.notify_all()

    def _post(self, client: httpx.Client) -> Outcome:
        sent = time.monotonic()
        try:
            answer = client.post(
                "/v1/predict", content=SEVEN_PNG, headers={"content-type": "image/png"}
            )
        except httpx.HTTPError as error:
            return Outcome(sent, None, None, f"{type(error).__name__}: {error}")
        if answer.status_code != 200:
            return Outcome(sent, answer.status_code, None, answer.text[:200])
        body = answer.json()
        assert body["digit"] == 7
        return Outcome(sent, 200, int(body["model"]["version"]))

    def _record(self, outcome: Outcome) -> None:
        with self.changed:
            self.outcomes.append(outcome)
            self.changed.notify_all()

    def answered_after(self, moment: float, count: int = AFTER_EACH_CHANGE) -> list[Outcome]:
        """Waits until `count` requests sent after `moment` are answered; returns them all."""

        def enough_or_ended() -> bool:
            answered = sum(o.sent > moment for o in self.outcomes)
            return answered >= count or not any(t.is_alive() for t in self.threads)

        with self.changed:
            self.changed.wait_for(enough_or_ended, timeout=120)
            after = [o for o in self.outcomes if o.sent > moment]
        assert len(after) >= count, f"the load loop ended after {len(self.outcomes)} requests"
        return after


def versions_of(outcomes: list[Outcome]) -> set[int | None]:
    return {o.version for o in outcomes}


def index(client: triton.InferenceServerClient) -> dict[str, tuple[str, str]]:
    entries = client.get_model_repository_index(headers=AUTH)
    return {e["version"]: (e["state"], e.get("reason", "")) for e in entries}


def serving_log_lines(server: LiveServer, versions: list[int]) -> int:
    """How many workers logged that they now serve exactly `versions`."""
    count = 0
    for line in server.log().splitlines():
        if '"serving versions"' in line:
            record = json.loads(line)
            count += record["versions"] == versions
    return count


def workers_confirmed(state_dir: Path) -> list[tuple[int, str | None]]:
    """(generation, error) that each worker reports serving, from the shared folder."""
    found = []
    for path in sorted(state_dir.glob("worker-*.json")):
        record = json.loads(path.read_text())
        found.append((record["generation"], record["error"]))
    return found


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return new_repository(tmp_path)


@pytest.fixture
def server(tmp_path: Path, repository: Path) -> Iterator[LiveServer]:
    env = {"MNIST_MODEL_REPOSITORY": str(repository), "MNIST_API_KEYS": KEY}
    state = ["--repository-state-dir", str(tmp_path / "state")]
    with live_server(tmp_path, "--workers", "2", *state, env=env) as live:
        # Ready means one worker answers; the tests need both, each registered in the
        # shared folder (else a load waits only for the first, and the second starts
        # on the new version later). Bounded polling: no event crosses processes.
        deadline = time.monotonic() + 60
        while len(workers_confirmed(tmp_path / "state")) < 2:
            assert time.monotonic() < deadline, "the second worker never registered"
            time.sleep(0.05)
        yield live


def test_rollout_and_rollback_under_load_with_zero_failed_requests(
    server: LiveServer, repository: Path, tmp_path: Path
) -> None:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    state_dir = tmp_path / "state"
    with LoadLoop(server.url) as load:
        assert versions_of(load.answered_after(0.0)) == {1}
        assert index(client) == {"1": ("READY", "")}

        # A new version appears: listed, not served until it is loaded.
        add_version(repository, 2)
        assert index(client)["2"][0] == "UNAVAILABLE"
        client.load_model(NAME, headers=AUTH)
        loaded = time.monotonic()
        assert index(client)["2"] == ("READY", "")
        assert index(client)["1"][0] in {"UNAVAILABLE", "UNLOADING"}
        assert versions_of(load.answered_after(loaded)) == {2}
        # Both workers switched before load_model returned: each logged it and confirmed.
        assert serving_log_lines(server, [2]) == 2
        assert workers_confirmed(state_dir) == [(1, None), (1, None)]

        # A corrupt version fails its checksum; version 2 keeps serving everywhere.
        add_version(repository, 3, corrupt=True)
        with pytest.raises(InferenceServerException) as refused:
            client.load_model(NAME, headers=AUTH)
        assert refused.value.status() == "400"
        assert "version 3" in refused.value.message() and "sha256" in refused.value.message()
        failed = time.monotonic()
        assert index(client)["3"][0] == "UNAVAILABLE"
        assert index(client)["2"] == ("READY", "")
        assert versions_of(load.answered_after(failed)) == {2}
        remove_version(repository, 3)

        # Rollback with a version policy in the load request, as Triton accepts it.
        only_v1 = json.dumps({"version_policy": {"specific": {"versions": [1]}}})
        client.load_model(NAME, headers=AUTH, config=only_v1)
        rolled_back = time.monotonic()
        assert index(client)["1"] == ("READY", "")
        assert versions_of(load.answered_after(rolled_back)) == {1}

        # Forward again, then rollback by taking the newest version out of the repository.
        client.load_model(NAME, headers=AUTH)
        forward = time.monotonic()
        assert versions_of(load.answered_after(forward)) == {2}
        remove_version(repository, 2)
        client.load_model(NAME, headers=AUTH)
        removed = time.monotonic()
        assert index(client) == {"1": ("READY", "")}
        assert versions_of(load.answered_after(removed)) == {1}
        assert workers_confirmed(state_dir) == [(4, None), (4, None)]

    failures = [o for o in load.outcomes if o.status != 200]
    assert failures == [], f"{len(failures)} of {len(load.outcomes)} requests failed"
    print(f"\n{len(load.outcomes)} requests during 4 loads, 1 refused load: 0 failed")

    # unload_model takes the model out of service, on every worker.
    client.unload_model(NAME, headers=AUTH)
    assert not client.is_model_ready(NAME, headers=AUTH)
    for _ in range(10):  # new connections: either worker may answer
        answer = httpx.post(
            f"{server.url}/v1/predict",
            content=SEVEN_PNG,
            headers={**AUTH, "content-type": "image/png"},
            timeout=10,
        )
        assert answer.status_code == 404 and "unloaded" in answer.json()["error"]
    assert index(client)["1"][0] in {"UNAVAILABLE", "UNLOADING"}
    assert server.terminate() == 0


def test_the_client_picks_a_version_and_shows_which_answered(
    tmp_path: Path, repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_version(repository, 2)
    image = tmp_path / "seven.png"
    image.write_bytes(SEVEN_PNG)
    env = {"MNIST_MODEL_REPOSITORY": str(repository), "MNIST_VERSION_POLICY": "latest:2"}
    with live_server(tmp_path, env=env) as live:
        with DigitClient(live.url) as newest, DigitClient(live.url, model_version=1) as pinned:
            assert newest.predict(image)["model"]["version"] == 2
            assert pinned.predict(image)["model"]["version"] == 1
            assert [m["version"] for m in newest.models()] == [1, 2]
        url = ["--url", live.url]
        assert client_main(["predict", str(image), *url, "--model-version", "1"]) == 0
        assert client_main(["predict", str(image), *url]) == 0
        assert client_main(["models", *url]) == 0
        assert client_main(["predict", str(image), *url, "--model-version", "5"]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith(f"{image}: 7 (confidence ")
    assert lines[0].endswith(", model version 1)")
    assert lines[1].endswith("model version 2)")
    assert lines[2].startswith("mnist-mlp version 1 (int8, MNIST test accuracy ")
    assert lines[3].startswith("mnist-mlp version 2 (int8")
    assert "error 404" in err and "served versions: 1, 2" in err
