"""Fuzz the HTTP API: schemathesis from the app's own OpenAPI schema, plus hypothesis
throwing random bytes and random JSON at every POST endpoint.

Promise under test: whatever arrives, the answer is never a 5xx, and schemathesis
checks that status codes, content types, headers and bodies match the schema the
service publishes. The app runs in-process through its real lifespan (model
loaded, batcher running); image decoding itself is fuzzed separately in
tests/service/test_preprocess_fuzz.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks

from evaluation.live_server import LiveServer, live_server
from service.app import create_app
from service.config import Settings
from tests.conftest import SERVED_VERSION

# Small limits so that generated bodies reach them; a short deadline so nothing hangs.
LIMITS = {
    "max_upload_bytes": 256 * 1024,
    "max_batch_items": 16,
    "request_timeout_s": 5.0,
    "max_queue_delay_ms": 1.0,
}
SETTINGS = Settings(**LIMITS)  # type: ignore[arg-type]
APP = create_app(SETTINGS)
# The schema the service publishes at /openapi.json (building it needs no lifespan).
# Requests go to a real server process: schemathesis' in-process ASGI transport ends
# the app's lifespan between operations, and a stopped app rightly answers 503.
schema = schemathesis.openapi.from_dict(APP.openapi())

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 25  # x ~16 operations: a few hundred requests, well under a minute
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,  # first calls pay the model warm-up; the client has its own timeout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,  # CI-stable: the same examples every run
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {f"MNIST_{name.upper()}": str(value) for name, value in LIMITS.items()}
    with live_server(tmp_path_factory.mktemp("fuzz"), env=env) as running:
        yield running


@pytest.mark.slow
@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_conforms_and_never_5xx(
    server: LiveServer, case: schemathesis.Case[Any]
) -> None:
    case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=10)


# -- hypothesis: raw garbage at every POST endpoint -------------------------------------------

POST_PATHS = [
    path for path, item in APP.openapi()["paths"].items() if "post" in item and "{" not in path
] + ["/v2/models/mnist-mlp/infer", f"/v2/models/mnist-mlp/versions/{SERVED_VERSION}/infer"]
CONTENT_TYPES = [
    "application/json",
    "image/png",
    "image/jpeg",
    "application/octet-stream",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "text/plain",
    "",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(
        st.sampled_from(["image", "images", "pixels", "inputs", "data", "shape", "datatype",
                         "name", "outputs", "parameters", "id"]) | st.text(max_size=8),
        children,
        max_size=6,
    ),
    max_leaves=40,
)  # fmt: skip


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(SETTINGS), raise_server_exceptions=False) as http:
        yield http


def _assert_handled(response: Any, what: str) -> None:
    assert response.status_code < 500, f"{what} -> {response.status_code} {response.text[:300]}"
    body = response.json()
    assert isinstance(body, dict), body
    if response.status_code >= 400:
        assert set(body) == {"error"} and body["error"], body


@pytest.mark.slow
@pytest.mark.parametrize("path", POST_PATHS)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(body=st.binary(max_size=2048), content_type=st.sampled_from(CONTENT_TYPES))
def test_random_bytes_never_5xx(
    client: TestClient, path: str, body: bytes, content_type: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(path, content=body, headers=headers)
    _assert_handled(response, f"{content_type} {body[:40]!r}")


@pytest.mark.slow
@pytest.mark.parametrize("path", POST_PATHS)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(value=json_values)
def test_random_json_never_5xx(client: TestClient, path: str, value: object) -> None:
    try:
        text = json.dumps(value, allow_nan=True)
    except ValueError:  # pragma: no cover - json.dumps accepts every generated value
        return
    response = client.post(path, content=text, headers={"Content-Type": "application/json"})
    _assert_handled(response, text[:200])
