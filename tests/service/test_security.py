"""Security: API keys, open health endpoints, keys and images never logged, model-file
safety at startup, request ids, and the JSON access log.

In-process (TestClient through the real lifespan) where the app alone decides;
a real server process where logs, exit codes and startup messages are the point.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from evaluation.live_server import ROOT, free_port, live_server
from service.api.auth import ApiKeyCheck
from service.api.schemas import EXAMPLE_PNG_BASE64
from service.app import create_app
from service.config import Settings
from service.errors import ModelLoadError
from service.model import resolve_version_dir
from tests.conftest import SERVED_VERSION

MODELS = ROOT / "models"
SEVEN_PNG = base64.b64decode(EXAMPLE_PNG_BASE64)
KEY_A = "key-alpha-7f3c9e2b41d8a6f0"
KEY_B = "key-bravo-0c5e8d1a2b3f4e6d"
WRONG_KEY = "key-wrong-9a8b7c6d5e4f3a2b"
# A vertical bar: a "1" that is not blank (blank pixels answer 422).
PIXELS = {"pixels": [[255.0 if 12 <= column <= 15 else 0.0 for column in range(28)]] * 28}
BAR = [value for row in PIXELS["pixels"] for value in row]
V2_BODY = {"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "FP32", "data": BAR}]}

# Every operation that costs work or reveals the model: (method, path, json body or None)
PROTECTED = [
    ("POST", "/v1/predict", {"image": EXAMPLE_PNG_BASE64}),
    ("POST", "/v1/predict/batch", {"images": [EXAMPLE_PNG_BASE64]}),
    ("GET", "/v1/models", None),
    ("GET", "/v2/models/mnist-mlp", None),
    ("GET", f"/v2/models/mnist-mlp/versions/{SERVED_VERSION}", None),
    ("POST", "/v2/models/mnist-mlp/infer", V2_BODY),
    ("POST", f"/v2/models/mnist-mlp/versions/{SERVED_VERSION}/infer", V2_BODY),
]
OPEN = ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/v2/models/mnist-mlp/ready"]


def _client(**settings: Any) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(**settings))) as client:
        yield client


@pytest.fixture(scope="module")
def keyed() -> Iterator[TestClient]:
    yield from _client(api_keys=f"{KEY_A},{KEY_B}")


def _call(
    client: TestClient, method: str, path: str, body: object, headers: dict[str, str]
) -> Any:  # starlette's TestClient returns its own (httpx2) Response type
    return client.request(method, path, json=body, headers=headers)


# -- API keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_protected_operations_need_a_valid_key(
    keyed: TestClient, method: str, path: str, body: object
) -> None:
    for headers in (
        {},
        {"Authorization": f"Bearer {WRONG_KEY}"},
        {"X-API-Key": WRONG_KEY},
        {"Authorization": f"Basic {KEY_A}"},  # right secret, wrong scheme
        {"Authorization": f"Bearer {KEY_A[:-1]}"},  # a prefix is not the key
        {"X-API-Key": KEY_A + "x"},
        {"X-API-Key": ""},
    ):
        response = _call(keyed, method, path, body, headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert "API key" in response.json()["error"]
    for headers in (
        {"Authorization": f"Bearer {KEY_A}"},
        {"authorization": f"bearer {KEY_B}"},
        {"X-API-Key": KEY_B},
    ):
        response = _call(keyed, method, path, body, headers)
        assert response.status_code == 200, (headers, response.text)


def test_unauthenticated_body_is_refused_before_it_is_parsed(keyed: TestClient) -> None:
    """401 must not depend on the body: an anonymous client should not get the server to
    parse (megabytes of) JSON, nor learn anything from a 400 vs 422."""
    for path in ("/v1/predict", "/v1/predict/batch", "/v2/models/mnist-mlp/infer"):
        for body in (b"{not json", b"[" * 5000, b'{"inputs": "x"}'):
            response = keyed.post(path, content=body, headers={"Content-Type": "application/json"})
            assert response.status_code == 401, (path, body[:20], response.text)


@pytest.mark.parametrize("path", OPEN)
def test_health_endpoints_stay_open(keyed: TestClient, path: str) -> None:
    assert keyed.get(path).status_code == 200


def test_metrics_open_by_default_even_with_keys(keyed: TestClient) -> None:
    response = keyed.get("/metrics")
    assert response.status_code == 200
    assert "mnist_http_requests_total" in response.text


def test_metrics_can_require_a_key() -> None:
    for client in _client(api_keys=KEY_A, metrics_require_key=True):
        denied = client.get("/metrics")
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"] == "Bearer"
        assert client.get("/metrics", headers={"X-API-Key": KEY_A}).status_code == 200
        assert client.get("/healthz").status_code == 200  # health stays open


def test_authentication_is_off_without_keys() -> None:
    for client in _client():
        assert client.post("/v1/predict", json=PIXELS).status_code == 200


def test_keys_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_API_KEYS", f" {KEY_A} ,, {KEY_B} ")
    with TestClient(create_app(Settings())) as client:
        assert client.post("/v1/predict", json=PIXELS).status_code == 401
        for key in (KEY_A, KEY_B):
            response = client.post("/v1/predict", json=PIXELS, headers={"X-API-Key": key})
            assert response.status_code == 200


def test_keys_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# rotated 2026-11\n{KEY_A}\n\n  {KEY_B}  \n")
    monkeypatch.setenv("MNIST_API_KEYS_FILE", str(keys))
    with TestClient(create_app(Settings())) as client:
        assert client.post("/v1/predict", json=PIXELS).status_code == 401
        auth = {"Authorization": f"Bearer {KEY_B}"}
        assert client.post("/v1/predict", json=PIXELS, headers=auth).status_code == 200
        comment = {"X-API-Key": "# rotated 2026-11"}
        assert client.post("/v1/predict", json=PIXELS, headers=comment).status_code == 401


def test_key_check_compares_every_key() -> None:
    check = ApiKeyCheck([KEY_A, KEY_B])
    assert check.enabled
    assert check.is_valid(KEY_A) and check.is_valid(KEY_B)
    for guess in (None, "", KEY_A[:8], KEY_A.upper(), KEY_A + KEY_B, "é" + KEY_A):
        assert not check.is_valid(guess)
    assert not ApiKeyCheck([]).enabled


# -- logs: keys and images never written, access log shape, request ids ----------------------


@pytest.fixture(scope="module")
def logged_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Run a keyed server through a set of requests; yield (its url, its whole log)."""
    env = {"MNIST_API_KEYS": f"{KEY_A},{KEY_B}", "MNIST_LOG_LEVEL": "debug"}
    with live_server(tmp_path_factory.mktemp("logs"), env=env) as server:
        marker = base64.b64encode(b"IMAGE-BYTES-MARKER-" + SEVEN_PNG).decode()
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            client.post(
                "/v1/predict",
                content=SEVEN_PNG,
                headers={
                    "X-API-Key": KEY_A,
                    "Content-Type": "image/png",
                    "X-Request-ID": "trace-123",
                },
            )
            client.post(
                "/v1/predict", json={"image": marker}, headers={"Authorization": f"Bearer {KEY_B}"}
            )
            client.post(
                "/v1/predict",
                json={"image": EXAMPLE_PNG_BASE64},
                headers={"Authorization": f"Bearer {WRONG_KEY}"},
            )
            client.post(
                "/v1/predict",
                content=b"IMAGE-BYTES-MARKER" * 10,
                headers={"X-API-Key": WRONG_KEY, "Content-Type": "image/png"},
            )
            client.post(
                "/v1/predict",
                content=b"IMAGE-BYTES-MARKER",
                headers={"X-API-Key": KEY_A, "Content-Type": "image/png"},
            )
            client.get("/v1/models", headers={"X-API-Key": KEY_A})
        url = server.url
        # A graceful stop lets every request finish writing its access-log line.
        assert server.terminate() == 0
    yield url, server.log()  # fmt: skip


def test_keys_and_image_bytes_never_reach_the_logs(logged_server: tuple[str, str]) -> None:
    _, log = logged_server
    assert log.strip(), "the server wrote no log at all"
    for secret in (
        KEY_A,
        KEY_B,
        WRONG_KEY,
        KEY_A[:12],
        "IMAGE-BYTES-MARKER",
        EXAMPLE_PNG_BASE64[:24],
    ):
        assert secret not in log, f"{secret[:6]}... appears in the server log"
    assert base64.b64encode(b"IMAGE-BYTES-MARKER")[:16].decode() not in log


def test_access_log_lines_are_json_with_the_essentials(logged_server: tuple[str, str]) -> None:
    _, log = logged_server
    entries = [orjson.loads(line) for line in log.splitlines() if line.strip()]
    access = [e for e in entries if e.get("logger") == "service.access"]
    assert len(access) == 6, access
    for entry in access:
        assert {"request_id", "route", "status", "duration_ms", "time", "level"} <= set(entry)
        assert isinstance(entry["status"], int) and entry["duration_ms"] >= 0
        assert entry["client"] == "127.0.0.1"  # the peer's address, as the server saw it
        assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", entry["request_id"])
        assert not {"headers", "body", "authorization", "x-api-key"} & {k.lower() for k in entry}
    assert access[0]["request_id"] == "trace-123"
    assert access[0]["route"] == "/v1/predict"
    assert [e["status"] for e in access] == [200, 422, 401, 401, 422, 200]


def test_request_id_is_echoed_generated_or_replaced() -> None:
    for client in _client():
        given = client.get("/v1/models", headers={"X-Request-ID": "abc-123:retry.2"})
        assert given.headers["x-request-id"] == "abc-123:retry.2"
        made = {client.get("/v1/models").headers["x-request-id"] for _ in range(3)}
        assert len(made) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in made)
        for garbage in ("", " ", "a b", "x" * 129, "id\tinjected", "../../etc", "<script>"):
            response = client.get("/v1/models", headers={"X-Request-ID": garbage})
            echoed = response.headers["x-request-id"]
            assert echoed != garbage and re.fullmatch(r"[0-9a-f]{32}", echoed), garbage
        # Errors and probes carry it too.
        assert client.post("/v1/predict", json={}).headers["x-request-id"]
        assert (
            client.get("/healthz", headers={"X-Request-ID": "probe-1"}).headers["x-request-id"]
            == "probe-1"
        )


# -- model safety at startup ----------------------------------------------------------------


def _start(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`python -m service` that must refuse to start: its exit code and output."""
    environment = {**os.environ, "MNIST_MODEL_REPOSITORY": str(MODELS), **env}
    return subprocess.run(
        [sys.executable, "-m", "service", "--port", str(free_port())],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    assert len(lines) == 1, "expected one clear line, got:\n" + "\n".join(lines[-15:])
    assert "Traceback" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", ".hidden"])
def test_model_name_traversal_is_refused_at_startup(tmp_path: Path, name: str) -> None:
    line = _one_line_error(_start({"MNIST_MODEL_NAME": name}, tmp_path))
    assert "model_name" in line or "model name" in line, line


def test_model_version_directory_cannot_escape_the_repository(tmp_path: Path) -> None:
    repository, outside = tmp_path / "models", tmp_path / "outside"
    shutil.copytree(MODELS / "mnist-mlp" / "1", outside, ignore=shutil.ignore_patterns("report"))
    (repository / "mnist-mlp").mkdir(parents=True)
    (repository / "mnist-mlp" / "7").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ModelLoadError, match="escapes the repository"):
        resolve_version_dir(repository, "mnist-mlp", None)
    with pytest.raises(ModelLoadError, match="not a plain name"):
        resolve_version_dir(repository, "../outside", None)


def test_corrupt_model_file_is_refused_with_one_line_naming_it(tmp_path: Path) -> None:
    version_dir = tmp_path / "models" / "mnist-mlp" / "1"
    shutil.copytree(
        MODELS / "mnist-mlp" / "1", version_dir, ignore=shutil.ignore_patterns("report")
    )
    model = version_dir / "model.int8.onnx"  # the file the card says to serve
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte deep inside the weights
    model.write_bytes(bytes(data))
    result = _start({"MNIST_MODEL_REPOSITORY": str(tmp_path / "models")}, tmp_path)
    line = _one_line_error(result)
    assert result.returncode == 2
    assert str(model) in line and "sha256" in line, line


def test_missing_model_is_refused_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    line = _one_line_error(_start({"MNIST_MODEL_REPOSITORY": str(tmp_path / "empty")}, tmp_path))
    assert "no versions of model 'mnist-mlp'" in line, line
