"""Hot load, unload and the repository API through the real app (one process).

Each test builds a temporary repository from the shipped version 1; other
versions are copies with their card's version changed, so every answer's
`model.version` says which version produced it. Corrupt copies have one byte
flipped in the served file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from evaluation.samples import SEVEN_PNG
from service.app import create_app
from service.config import Settings
from tests.service.repository_support import NAME, add_version, new_repository, remove_version

KEY = "test-key"
AUTH = {"X-API-Key": KEY}
PNG = {"content-type": "image/png"}

MakeClient = Callable[..., TestClient]


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return new_repository(tmp_path)


@pytest.fixture
def make_client(repository: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeClient]:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = Settings.model_validate(
            {"model_repository": repository, "api_keys": KEY, **overrides}
        )
        client = TestClient(create_app(settings), headers=AUTH)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def index(client: TestClient, **body: Any) -> dict[str, tuple[str, str]]:
    answer = client.post("/v2/repository/index", json=body)
    assert answer.status_code == 200, answer.text
    return {entry["version"]: (entry["state"], entry["reason"]) for entry in answer.json()}


def load(client: TestClient, policy: dict[str, Any] | None = None) -> Any:
    body = {"parameters": {"config": json.dumps({"version_policy": policy})}} if policy else {}
    return client.post(f"/v2/repository/models/{NAME}/load", json=body)


def answered_by(client: TestClient, headers: dict[str, str] | None = None, **kwargs: Any) -> int:
    answer = client.post(
        "/v1/predict", content=SEVEN_PNG, headers={**PNG, **(headers or {})}, **kwargs
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["digit"] == 7
    version: int = answer.json()["model"]["version"]
    return version


def metric(client: TestClient, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_the_repository_api_is_off_without_keys_and_needs_a_key_with_them(
    make_client: MakeClient,
) -> None:
    assert make_client(api_keys="").post("/v2/repository/index").status_code == 404
    client = make_client()
    refused = client.post("/v2/repository/index", headers={"X-API-Key": "wrong"})
    assert refused.status_code == 401
    assert client.post("/v2/repository/index").status_code == 200
    opened = make_client(api_keys="", repository_api=True)
    assert opened.post("/v2/repository/index").status_code == 200
    off = make_client(repository_api=False)
    assert off.post(f"/v2/repository/models/{NAME}/load").status_code == 404


def test_a_new_version_goes_live_on_load(repository: Path, make_client: MakeClient) -> None:
    client = make_client()
    assert index(client) == {"1": ("READY", "")}
    add_version(repository, 2)
    assert index(client)["2"] == (
        "UNAVAILABLE",
        "not loaded yet; the policy picks it: loads on the next load request",
    )
    assert answered_by(client) == 1, "a version is not served before it is loaded"

    answer = load(client)
    assert answer.status_code == 200, answer.text
    assert answer.json()["versions"] == ["2"]
    assert answered_by(client) == 2
    states = index(client)
    assert states["2"] == ("READY", "")
    assert states["1"][0] in {"UNLOADING", "UNAVAILABLE"}  # UNLOADING until released
    assert index(client, ready=True) == {"2": ("READY", "")}
    assert client.post("/v1/predict?version=1", content=SEVEN_PNG, headers=PNG).status_code == 404
    assert [m["version"] for m in client.get("/v1/models").json()["models"]] == [2]
    assert client.get(f"/v2/models/{NAME}").json()["versions"] == ["2"]
    v2 = client.post(f"/v2/models/{NAME}/infer", json=infer_body())
    assert v2.json()["model_version"] == "2"

    assert metric(client, "mnist_model_version_served", version="2") == 1
    assert metric(client, "mnist_model_version_served", version="1") == 0
    assert metric(client, "mnist_model_loads_total", version="2", outcome="loaded") == 1
    assert metric(client, "mnist_batch_size_rows_count", version="2") == 2


def infer_body() -> dict[str, Any]:
    from evaluation.samples import load_sample

    images, _ = load_sample()
    data = images[0].ravel().tolist()
    return {
        "inputs": [{"name": "image_u8", "shape": [1, 28, 28], "datatype": "UINT8", "data": data}]
    }


def test_a_corrupt_version_fails_to_load_and_the_old_keeps_serving(
    repository: Path, make_client: MakeClient
) -> None:
    client = make_client()
    add_version(repository, 2, corrupt=True)
    answer = load(client)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert "version 2" in error and "does not match its card" in error and "sha256" in error
    assert answered_by(client) == 1
    state, reason = index(client)["2"]
    assert state == "UNAVAILABLE" and "load failed" in reason and "sha256" in reason
    assert index(client)["1"] == ("READY", "")
    assert metric(client, "mnist_model_loads_total", version="2", outcome="failed") == 1
    assert metric(client, "mnist_model_version_served", version="1") == 1


def test_version_policies_in_load_requests_and_rollback(
    repository: Path, make_client: MakeClient
) -> None:
    client = make_client()
    add_version(repository, 2)
    assert load(client, {"latest": {"num_versions": 2}}).json()["versions"] == ["1", "2"]
    assert answered_by(client) == 2, "unversioned requests go to the newest served"
    assert answered_by(client, params={"version": "1"}) == 1
    assert answered_by(client, headers={"X-Model-Version": "1"}) == 1
    assert answered_by(client, params={"version": "2"}) == 2
    infer_v1 = client.post(f"/v2/models/{NAME}/versions/1/infer", json=infer_body())
    assert infer_v1.json()["model_version"] == "1"

    # Rollback with a policy, as Triton accepts it in the load request ...
    assert load(client, {"specific": {"versions": [1]}}).json()["versions"] == ["1"]
    assert answered_by(client) == 1
    assert index(client)["2"] == ("UNAVAILABLE", "not selected by the version policy specific:1")
    # ... or by taking the newest version out of the repository and loading again.
    assert load(client).json()["versions"] == ["2"]
    remove_version(repository, 2)
    assert load(client).json()["versions"] == ["1"]
    assert answered_by(client) == 1
    assert set(index(client)) == {"1"}


def test_unload_takes_the_model_out_of_service_until_the_next_load(
    make_client: MakeClient,
) -> None:
    client = make_client()
    assert client.post(f"/v2/repository/models/{NAME}/unload", json={}).status_code == 200
    refused = client.post("/v1/predict", content=SEVEN_PNG, headers=PNG)
    assert refused.status_code == 404 and "unloaded" in refused.json()["error"]
    assert client.get("/readyz").status_code == 503
    assert client.get(f"/v2/models/{NAME}/ready").status_code == 404
    assert index(client)["1"][0] in {"UNLOADING", "UNAVAILABLE"}
    assert metric(client, "mnist_model_version_served", version="1") == 0
    assert load(client).status_code == 200
    assert answered_by(client) == 1
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"parameters": {"config": "{not json"}}, "'config' is not JSON"),
        ({"parameters": {"file:1/model.onnx": "AAAA"}}, "file overrides are not supported"),
        ({"parameters": {"config": '{"max_batch_size": 8}'}}, "not supported"),
        ({"parameters": {"config": '{"name": "other"}'}}, "names model 'other'"),
        ({"parameters": {"config": '{"platform": "tensorrt_plan"}'}}, "only onnxruntime"),
        ({"parameters": {"config": '{"version_policy": {"newest": {}}}'}},
         "unknown version_policy"),
        ({"parameters": {"config": '{"version_policy": {"specific": {"versions": [9]}}}'}},
         "matches the version policy specific:9"),
        ({"parameters": {"other": 1}}, "unknown load parameter"),
        ([1, 2], "must be a JSON object"),
    ],
)  # fmt: skip
def test_bad_load_requests_say_why_and_change_nothing(
    make_client: MakeClient, body: Any, message: str
) -> None:
    client = make_client()
    answer = client.post(f"/v2/repository/models/{NAME}/load", json=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
    assert answered_by(client) == 1


def test_other_models_are_not_found(make_client: MakeClient) -> None:
    client = make_client()
    for action in ("load", "unload"):
        answer = client.post(f"/v2/repository/models/other/{action}")
        assert answer.status_code == 404 and "serves 'mnist-mlp'" in answer.json()["error"]
    assert client.post("/v2/repository/index", content=b"[").status_code == 400
