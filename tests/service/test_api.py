"""The REST v1 endpoints through the real app and its lifespan (model, batcher)."""

from __future__ import annotations

import base64
import gc
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import YOUNG_COLLECTION_THRESHOLD
from tests.conftest import MODEL_NAME, SERVED_VERSION, png_bytes


@pytest.fixture(scope="module")
def digits(mnist_sample: tuple[np.ndarray, np.ndarray]) -> list[tuple[bytes, int]]:
    images, labels = mnist_sample
    return [(png_bytes(images[i]), int(labels[i])) for i in range(20)]


def check_prediction(item: dict[str, object], label: int) -> None:
    assert item["digit"] == label
    probabilities = item["probabilities"]
    assert isinstance(probabilities, list) and len(probabilities) == 10
    assert abs(sum(probabilities) - 1) < 1e-4
    assert item["confidence"] == pytest.approx(max(probabilities), abs=1e-6)
    assert item["model"] == {"name": MODEL_NAME, "version": SERVED_VERSION}


def test_predict_accepts_multipart_raw_and_json(
    client: TestClient, digits: list[tuple[bytes, int]]
) -> None:
    png, label = digits[0]
    encoded = base64.b64encode(png).decode()
    answers = [
        client.post("/v1/predict", files={"file": ("d.png", png, "image/png")}),
        client.post("/v1/predict", content=png, headers={"content-type": "image/png"}),
        client.post("/v1/predict", json={"image": encoded}),
        client.post("/v1/predict", json={"image": "data:image/png;base64," + encoded}),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        check_prediction(answer.json(), label)


def test_predict_pixels_match_the_image_path(
    client: TestClient, mnist_sample: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_sample
    answer = client.post("/v1/predict", json={"pixels": images[1].tolist()})
    assert answer.status_code == 200, answer.text
    check_prediction(answer.json(), int(labels[1]))


def test_batch_keeps_input_order(client: TestClient, digits: list[tuple[bytes, int]]) -> None:
    files = [("files", (f"{i}.png", png, "image/png")) for i, (png, _) in enumerate(digits)]
    multipart = client.post("/v1/predict/batch", files=files)
    as_json = client.post(
        "/v1/predict/batch", json={"images": [base64.b64encode(png).decode() for png, _ in digits]}
    )
    for answer in (multipart, as_json):
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert len(predictions) == len(digits)
        for item, (_, label) in zip(predictions, digits, strict=True):
            check_prediction(item, label)


def test_models_lists_the_card(client: TestClient) -> None:
    answer = client.get("/v1/models")
    assert answer.status_code == 200
    (model,) = answer.json()["models"]
    assert model["name"] == "mnist-mlp" and model["ready"] is True
    assert len(model["card"]["sha256"]) == 64
    assert model["card"]["classes"] == [str(d) for d in range(10)]


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    made = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"}).headers[
        "x-request-id"
    ]
    assert made != "bad id\twith spaces" and len(made) == 32


def blank_png(color: int = 255) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (64, 64), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("kwargs", "status", "fragment"),
    [
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "not accepted"),
        ({"content": b"", "headers": {"content-type": "image/png"}}, 422, ""),
        ({"content": b"not an image", "headers": {"content-type": "image/png"}}, 422, "image"),
        ({"content": blank_png(), "headers": {"content-type": "image/png"}}, 422, "blank"),
        ({"json": {"image": "@@not base64@@"}}, 422, "base64"),
        ({"json": {"pixels": [[0] * 27] * 28}}, 422, ""),
        ({"json": {"pixels": [[300] * 28] * 28}}, 422, "255"),
        ({"json": {"pixels": "nope"}}, 422, ""),
        ({"json": {"image": "x", "pixels": []}}, 422, "exactly one"),
        ({"json": [1, 2]}, 422, "object"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "JSON"),
        ({"files": {"wrong": ("d.png", b"x", "image/png")}}, 422, "'file'"),
        ({"json": {"image": "a", "deep": [[[[[[[[[[[]]]]]]]]]]]}}, 422, "nested"),
    ],
)
def test_bad_input_gets_a_clear_4xx(
    client: TestClient, kwargs: dict[str, Any], status: int, fragment: str
) -> None:
    answer = client.post("/v1/predict", **kwargs)
    assert answer.status_code == status, answer.text
    message = answer.json()["error"]
    assert isinstance(message, str) and len(message) > 10
    assert fragment in message


def test_limits(make_client: Callable[..., TestClient], digits: list[tuple[bytes, int]]) -> None:
    client = make_client(max_upload_bytes=2000, max_batch_items=3)
    png = digits[0][0]
    too_many = [("files", (f"{i}.png", png, "image/png")) for i in range(4)]
    answer = client.post("/v1/predict/batch", files=too_many)
    assert answer.status_code == 413, answer.text
    assert "3" in answer.json()["error"]
    answer = client.post("/v1/predict", content=b"\0" * 5000, headers={"content-type": "image/png"})
    assert answer.status_code == 413
    assert "2000" in answer.json()["error"]


def test_unknown_route_and_method(client: TestClient) -> None:
    assert client.get("/nope").status_code == 404
    assert "error" in client.get("/nope").json()
    assert client.get("/v1/predict").status_code == 405


def test_openapi_documents_every_endpoint_with_examples(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ["/v1/predict", "/v1/predict/batch", "/v2/models/{name}/infer", "/v1/models"]:
        assert path in paths
    for path in ["/v1/predict", "/v1/predict/batch", "/v2/models/{name}/infer"]:
        content = paths[path]["post"]["requestBody"]["content"]["application/json"]
        assert "example" in content or "examples" in content


def test_pixels_json_cannot_fake_an_image_class(client: TestClient) -> None:
    blank = client.post("/v1/predict", json={"pixels": [[0] * 28] * 28})
    assert blank.status_code == 422
    assert "blank" in blank.json()["error"]


def test_every_documented_example_gets_a_real_answer(client: TestClient) -> None:
    """The /docs examples are what people try first: each must be answered, not refused."""
    paths = client.get("/openapi.json").json()["paths"]
    tried = 0
    for path, call in [("/v1/predict", "/v1/predict"), ("/v1/predict/batch", "/v1/predict/batch"),
                       ("/v2/models/{name}/infer", "/v2/models/mnist-mlp/infer")]:  # fmt: skip
        content = paths[path]["post"]["requestBody"]["content"]["application/json"]
        examples = [e["value"] for e in content.get("examples", {}).values()]
        examples += [content["example"]] if "example" in content else []
        for body in examples:
            answer = client.post(call, json=body)
            assert answer.status_code == 200, (path, answer.text)
            tried += 1
    assert tried >= 5


def test_a_started_worker_collects_young_objects_less_often(client: TestClient) -> None:
    """After start-up the collector runs every YOUNG_COLLECTION_THRESHOLD net allocations
    (Python's default, 700, collected every few requests: docs/benchmarks.md)."""
    assert client.get("/readyz").status_code == 200
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD > 700
