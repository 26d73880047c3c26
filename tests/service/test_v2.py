"""Open Inference Protocol v2 (KServe/Triton REST) endpoints."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import SERVED_VERSION, png_bytes

INFER = "/v2/models/mnist-mlp/infer"
SERVED = str(SERVED_VERSION)  # the protocol writes versions as strings


def test_server_and_model_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    server = client.get("/v2").json()
    assert server["name"] == "mnist-serve" and server["extensions"] == ["binary_tensor_data"]
    for path in ["/v2/models/mnist-mlp", f"/v2/models/mnist-mlp/versions/{SERVED}"]:
        meta = client.get(path).json()
        assert meta["name"] == "mnist-mlp" and meta["versions"] == [SERVED]
        assert {o["name"] for o in meta["outputs"]} == {"probabilities", "digit"}
    assert client.get("/v2/models/mnist-mlp/ready").json() == {"name": "mnist-mlp", "ready": True}
    assert client.get(f"/v2/models/mnist-mlp/versions/{SERVED}/ready").status_code == 200


@pytest.mark.parametrize(
    ("name", "datatype", "shape", "nested"),
    [
        ("pixels", "FP32", [5, 784], False),
        ("pixels", "FP32", [5, 1, 28, 28], True),
        ("image_u8", "UINT8", [5, 28, 28], False),
    ],
)
def test_infer_pixel_tensors(
    client: TestClient,
    mnist_sample: tuple[np.ndarray, np.ndarray],
    name: str,
    datatype: str,
    shape: list[int],
    nested: bool,
) -> None:
    images, labels = mnist_sample
    batch = images[:5].astype(np.float32)
    data = batch.reshape(shape).tolist() if nested else batch.ravel().tolist()
    body = {
        "id": "req-1",
        "inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}],
    }
    answer = client.post(INFER, json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["model_name"] == "mnist-mlp" and result["model_version"] == SERVED
    assert result["id"] == "req-1"
    outputs = {o["name"]: o for o in result["outputs"]}
    assert outputs["digit"]["datatype"] == "INT64" and outputs["digit"]["shape"] == [5]
    assert outputs["digit"]["data"] == labels[:5].tolist()
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(
        outputs["probabilities"]["shape"]
    )
    assert probabilities.shape == (5, 10)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)


def test_infer_bytes_images_and_output_selection(
    client: TestClient, mnist_sample: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_sample
    files = [base64.b64encode(png_bytes(images[i])).decode() for i in range(3)]
    body = {
        "inputs": [{"name": "image", "shape": [3], "datatype": "BYTES", "data": files}],
        "outputs": [{"name": "digit"}],
    }
    answer = client.post(f"/v2/models/mnist-mlp/versions/{SERVED}/infer", json=body)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["name"] == "digit" and output["data"] == labels[:3].tolist()


# A "1": a vertical bar, white on black.
BAR = [255.0 if 12 <= column <= 15 else 0.0 for _ in range(28) for column in range(28)]


def tensor(**overrides: object) -> dict[str, object]:
    item: dict[str, object] = {"name": "pixels", "shape": [1, 784], "datatype": "FP32", "data": BAR}
    item.update(overrides)
    return {"inputs": [item]}


def test_input_names_are_unique_and_declare_their_scale(client: TestClient) -> None:
    inputs = client.get("/v2/models/mnist-mlp").json()["inputs"]
    names = [i["name"] for i in inputs]
    assert len(names) == len(set(names)) == 3
    pixel_inputs = [i for i in inputs if i["datatype"] in ("FP32", "UINT8")]
    assert all(i["parameters"]["pixel_scale"] == "0..255" for i in pixel_inputs)


def test_blank_and_zero_to_one_tensors_are_refused_not_guessed(client: TestClient) -> None:
    blank = client.post(INFER, json=tensor(data=[0.0] * 784))
    assert blank.status_code == 400 and "blank" in blank.json()["error"]
    scaled = client.post(INFER, json=tensor(data=[v / 255 for v in BAR]))
    assert scaled.status_code == 400 and "multiply by 255" in scaled.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (tensor(data=[1.0] * 783), 400, "783 values"),
        (tensor(shape=[1, 785], data=[1.0] * 785), 400, "shape"),
        (tensor(datatype="FP64"), 400, "datatype"),
        (
            tensor(name="image_u8", datatype="UINT8", shape=[1, 28, 28], data=[0.5] * 784),
            400,
            "fractions",
        ),
        (tensor(datatype="UINT8"), 400, "datatype"),
        (tensor(name="nope"), 400, "unknown input"),
        (tensor(data=[300.0] * 784), 400, "0..255"),
        (tensor(data=["a"] * 784), 400, "numbers"),
        (tensor(name="image", datatype="BYTES", shape=[2], data=["aGk="]), 400, "BYTES"),
        (tensor(datatype="BYTES", shape=[1], data=["aGk="]), 400, "datatype"),
        (tensor(name="image", datatype="BYTES", shape=[1], data=["%%%"]), 422, "base64"),
        ({"inputs": []}, 400, "inputs"),
        ({"nothing": 1}, 400, "inputs"),
        ({**tensor(), "outputs": [{"name": "logits2"}]}, 400, "unknown outputs"),
    ],
)
def test_malformed_requests(
    client: TestClient, body: dict[str, Any], status: int, fragment: str
) -> None:
    answer = client.post(INFER, json=body)
    assert answer.status_code == status, answer.text
    assert fragment in answer.json()["error"]


def test_unknown_model_or_version_is_404(client: TestClient) -> None:
    for path in ["/v2/models/other", "/v2/models/mnist-mlp/versions/9", "/v2/models/other/ready"]:
        answer = client.get(path)
        assert answer.status_code == 404
        assert "not found" in answer.json()["error"]
    assert client.post("/v2/models/other/infer", json=tensor()).status_code == 404
