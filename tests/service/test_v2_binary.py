"""The binary tensor data extension, compressed bodies and binary /v1 batches, in-process.

Every malformed binary request is a 4xx with a message (never a 5xx, never a
read past the body); Hypothesis varies the JSON header's sizes and lengths.
"""

from __future__ import annotations

import gzip
import io
import zlib
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api.infer_body import decode_request
from service.api.parsing import Limits
from service.api.tensors import pixel_tensor_rows
from tests.conftest import png_bytes

INFER = "/v2/models/mnist-mlp/infer"
LIMITS = Limits(
    max_upload_bytes=1 << 20, max_image_pixels=1 << 24, max_batch_items=256, max_json_depth=8
)


def binary_body(
    tensors: list[tuple[dict[str, Any], bytes]], **request: Any
) -> tuple[bytes, dict[str, str]]:
    """A binary-extension body: the JSON header, then each tensor's bytes."""
    inputs = []
    for spec, raw in tensors:
        inputs.append({**spec, "parameters": {"binary_data_size": len(raw)}})
    head = orjson.dumps({"inputs": inputs, **request})
    body = head + b"".join(raw for _, raw in tensors)
    return body, {"Inference-Header-Content-Length": str(len(head))}


def u8(images: np.ndarray) -> tuple[dict[str, Any], bytes]:
    spec = {"name": "image_u8", "datatype": "UINT8", "shape": list(images.shape)}
    return spec, images.astype(np.uint8).tobytes()


def outputs_of(answer: Any) -> dict[str, np.ndarray]:
    """Decode an answer (JSON or JSON + binary) into arrays by output name."""
    length = answer.headers.get("inference-header-content-length")
    body = answer.content
    head = orjson.loads(body if length is None else body[: int(length)])
    offset = len(body) if length is None else int(length)
    arrays = {}
    for output in head["outputs"]:
        dtype = {"FP32": "<f4", "INT64": "<i8"}[output["datatype"]]
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            data = np.asarray(output["data"], dtype=dtype)
        else:
            data = np.frombuffer(body[offset : offset + size], dtype=dtype)
            offset += size
        arrays[output["name"]] = data.reshape(output["shape"])
    return arrays


@pytest.fixture
def digits(mnist_sample: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, list[int]]:
    images, labels = mnist_sample
    return images[:6], labels[:6].tolist()


def test_binary_in_mixed_out(client: TestClient, digits: tuple[np.ndarray, list[int]]) -> None:
    images, labels = digits
    body, headers = binary_body(
        [u8(images)],
        outputs=[
            {"name": "digit", "parameters": {"binary_data": True}},
            {"name": "probabilities"},
        ],
    )
    answer = client.post(INFER, content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    arrays = outputs_of(answer)
    assert arrays["digit"].tolist() == labels
    assert arrays["probabilities"].shape == (6, 10)


def test_fp32_binary_and_request_level_binary_output(
    client: TestClient, digits: tuple[np.ndarray, list[int]]
) -> None:
    images, labels = digits
    raw = images.reshape(6, 784).astype("<f4").tobytes()
    body, headers = binary_body(
        [({"name": "pixels", "datatype": "FP32", "shape": [6, 784]}, raw)],
        parameters={"binary_data_output": True},
    )
    answer = client.post(INFER, content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert outputs_of(answer)["digit"].tolist() == labels
    head = orjson.loads(answer.content[: int(answer.headers["inference-header-content-length"])])
    assert [o["parameters"]["binary_data_size"] for o in head["outputs"]] == [6 * 40, 6 * 8]


def test_binary_bytes_image_files(client: TestClient, digits: tuple[np.ndarray, list[int]]) -> None:
    images, labels = digits
    raw = b"".join(len(f).to_bytes(4, "little") + f for f in map(png_bytes, images))
    body, headers = binary_body([({"name": "image", "datatype": "BYTES", "shape": [6]}, raw)])
    answer = client.post(INFER, content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert outputs_of(answer)["digit"].tolist() == labels


@pytest.mark.parametrize("content_type", [None, "application/json", "application/octet-stream"])
def test_any_content_type(
    client: TestClient, digits: tuple[np.ndarray, list[int]], content_type: str | None
) -> None:
    images, labels = digits
    spec, raw = u8(images)
    json_body = orjson.dumps({"inputs": [{**spec, "data": list(raw)}]})
    binary, headers = binary_body([u8(images)])
    if content_type:
        headers["Content-Type"] = content_type
    for body, extra in ((json_body, {}), (binary, headers)):
        extra = {**extra, **({"Content-Type": content_type} if content_type else {})}
        answer = client.post(INFER, content=body, headers=extra)
        assert answer.status_code == 200, answer.text
        assert outputs_of(answer)["digit"].tolist() == labels


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
def test_compressed_request_and_answer(
    client: TestClient, digits: tuple[np.ndarray, list[int]], coding: str
) -> None:
    images, labels = digits
    body, headers = binary_body([u8(images)])
    if coding == "gzip":
        packed = gzip.compress(body)
    elif coding == "deflate":
        packed = zlib.compress(body)
    else:
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        packed = packer.compress(body) + packer.flush()
    sent = coding.removeprefix("raw-")
    headers = {**headers, "Content-Encoding": sent, "Accept-Encoding": f"{sent};q=1, br;q=0.5"}
    answer = client.post(INFER, content=packed, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-encoding"] == sent  # httpx inflated it for us
    assert outputs_of(answer)["digit"].tolist() == labels


def test_zip_bomb_is_413_and_broken_compression_400(make_client: Any) -> None:
    client = make_client(max_upload_bytes=100_000)
    bomb = gzip.compress(b"{" + b" " * 5_000_000 + b"}")
    assert len(bomb) < 100_000
    answer = client.post(INFER, content=bomb, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 413 and "limit" in answer.json()["error"]
    for coding, body, status in [
        ("gzip", b"not gzip at all", 400),
        ("gzip", gzip.compress(b'{"inputs": []}')[:-6], 400),
        ("gzip", gzip.compress(b"{}") + b"trailing", 400),
        ("br", b"{}", 415),
    ]:
        answer = client.post(INFER, content=body, headers={"Content-Encoding": coding})
        assert answer.status_code == status, (coding, answer.text)
        assert answer.json()["error"]


def _shaped(images: np.ndarray, **changes: Any) -> tuple[bytes, dict[str, str]]:
    spec, raw = u8(images)
    parameters = {"binary_data_size": len(raw)}
    parameters.update(changes.pop("parameters", {}))
    tensor = {**spec, "parameters": parameters, **changes}
    head = orjson.dumps({"inputs": [tensor]})
    return head + raw, {"Inference-Header-Content-Length": str(len(head))}


def test_malformed_binary_requests_are_400(
    client: TestClient, digits: tuple[np.ndarray, list[int]]
) -> None:
    images, _ = digits
    good, headers = binary_body([u8(images)])
    length = int(headers["Inference-Header-Content-Length"])
    cases: list[tuple[bytes, dict[str, str], str]] = [
        (good, {"Inference-Header-Content-Length": str(len(good) + 1)}, "only"),
        (good, {"Inference-Header-Content-Length": "-3"}, "Inference-Header-Content-Length"),
        (good, {"Inference-Header-Content-Length": "12abc"}, "Inference-Header-Content-Length"),
        (good, {"Inference-Header-Content-Length": str(length - 1)}, "JSON"),
        (good[:-10], headers, "only"),  # data missing
        (good + b"xx", headers, "belong to no input"),  # data left over
        (good, {}, "JSON"),  # binary data but no header length
        (*_shaped(images, parameters={"binary_data_size": -1}), "non-negative"),
        (*_shaped(images, parameters={"binary_data_size": "4704"}), "non-negative"),
        (*_shaped(images, data=[1, 2]), "both"),
        (*_shaped(images, shape=[7, 28, 28]), "bytes"),
        (*_shaped(images, shape=[6, 28, 27]), "shape"),
        (*_shaped(images, datatype="FP32"), "datatype"),
    ]
    for body, head, fragment in cases:
        answer = client.post(INFER, content=body, headers=head)
        assert answer.status_code == 400, (fragment, answer.text)
        assert fragment in answer.json()["error"], (fragment, answer.text)


def test_malformed_binary_bytes_elements(client: TestClient) -> None:
    png = png_bytes(np.eye(28, dtype=np.uint8) * 255)
    element = len(png).to_bytes(4, "little") + png
    for raw, count, fragment in [
        (element, 2, "ends before element 1"),
        (element[:-1], 1, "remain"),
        (element + b"x", 1, "after its 1 elements"),
        (b"\xff\xff\xff\xff", 1, "remain"),
    ]:
        spec = {"name": "image", "datatype": "BYTES", "shape": [count]}
        body, headers = binary_body([(spec, raw)])
        answer = client.post(INFER, content=body, headers=headers)
        assert answer.status_code == 400, answer.text
        assert fragment in answer.json()["error"]


def test_binary_rows_are_a_view_of_the_body(mnist_sample: tuple[np.ndarray, np.ndarray]) -> None:
    """Zero-copy up to the batcher: the checked rows share the request body's memory."""
    images, _ = mnist_sample
    body, headers = binary_body([u8(images[:32])])
    request = decode_request(body, int(headers["Inference-Header-Content-Length"]), LIMITS)
    rows = pixel_tensor_rows(request.input, LIMITS)
    assert rows.shape == (32, 784) and rows.dtype == np.uint8
    assert np.shares_memory(rows, np.frombuffer(body, dtype=np.uint8))


def test_request_timeout_parameter_is_honoured(
    client: TestClient, digits: tuple[np.ndarray, list[int]]
) -> None:
    images, _ = digits
    body, headers = binary_body([u8(images)], parameters={"timeout": 0})
    answer = client.post(INFER, content=body, headers=headers)
    assert answer.status_code == 400 and "timeout" in answer.json()["error"]
    body, headers = binary_body([u8(images)], parameters={"timeout": 5_000_000})
    assert client.post(INFER, content=body, headers=headers).status_code == 200


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    shape=st.lists(st.integers(-2, 300), min_size=0, max_size=4),
    datatype=st.sampled_from(["UINT8", "FP32", "BYTES", "INT64", "FP16"]),
    name=st.sampled_from(["image_u8", "pixels", "image", "other"]),
    size=st.one_of(st.integers(-5, 5000), st.just(None), st.text(max_size=3)),
    extra=st.binary(max_size=3000),
    length_delta=st.integers(-30, 30),
    outputs=st.one_of(
        st.none(),
        st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["digit", "probabilities", "x"])},
                optional={"parameters": st.dictionaries(
                    st.sampled_from(["binary_data", "classification"]),
                    st.one_of(st.booleans(), st.integers(0, 3)),
                )},
            ),
            max_size=3,
        ),
    ),
)  # fmt: skip
def test_fuzzed_binary_headers_never_5xx(
    client: TestClient,
    shape: list[int],
    datatype: str,
    name: str,
    size: Any,
    extra: bytes,
    length_delta: int,
    outputs: Any,
) -> None:
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    if size is not None:
        tensor["parameters"] = {"binary_data_size": size}
    request: dict[str, Any] = {"inputs": [tensor]}
    if outputs is not None:
        request["outputs"] = outputs
    head = orjson.dumps(request)
    body = head + extra
    length = max(len(head) + length_delta, 0)
    answer = client.post(
        INFER, content=body, headers={"Inference-Header-Content-Length": str(length)}
    )
    assert answer.status_code < 500, answer.text
    if answer.status_code != 200:
        assert answer.json()["error"]


# --- /v1/predict/batch with pixel arrays ---------------------------------------


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content_type", "encode"),
    [
        ("application/octet-stream", lambda a: a.astype(np.uint8).tobytes()),
        ("application/x-npy", lambda a: _npy(a.astype(np.uint8))),
        ("application/x-npy", lambda a: _npy(a.reshape(-1, 784).astype(np.float32))),
        ("application/octet-stream", lambda a: _npy(a.astype(np.float64))),
    ],
)
def test_v1_batch_pixel_arrays(
    client: TestClient, digits: tuple[np.ndarray, list[int]], content_type: str, encode: Any
) -> None:
    images, labels = digits
    answer = client.post(
        "/v1/predict/batch", content=encode(images), headers={"Content-Type": content_type}
    )
    assert answer.status_code == 200, answer.text
    assert [p["digit"] for p in answer.json()["predictions"]] == labels


def test_v1_batch_malformed_arrays(
    client: TestClient, digits: tuple[np.ndarray, list[int]]
) -> None:
    images, _ = digits
    good = _npy(images)
    octet, npy = "application/octet-stream", "application/x-npy"
    cases = [
        (octet, images.tobytes()[:-1], 422, "multiple of 784"),
        (octet, b"", 422, "no images"),
        (octet, np.zeros((2, 784), np.uint8).tobytes(), 422, "blank"),
        (npy, good[:-1], 422, "needs"),
        (npy, good[:20], 422, "header"),
        (npy, b"not numpy", 422, "magic"),
        (npy, _npy(np.array([object()], dtype=object)), 422, "dtype"),
        (npy, _npy(images.reshape(6, 28, 28, 1)), 422, "shape"),
        (npy, _npy(np.asfortranarray(images.reshape(6, 784).T)), 422, "C-ordered"),
        (npy, _npy(np.ones((300, 784), np.uint8)), 413, "300 images"),
        (npy, _npy(images / 255), 422, "multiply by 255"),
    ]
    for content_type, body, status, fragment in cases:
        answer = client.post(
            "/v1/predict/batch", content=body, headers={"Content-Type": content_type}
        )
        assert answer.status_code == status, (fragment, answer.text)
        assert fragment in answer.json()["error"], (fragment, answer.text)
