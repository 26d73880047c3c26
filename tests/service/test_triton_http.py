"""Unmodified `tritonclient.http` against a real mnist-serve process, with its defaults."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from evaluation.live_server import ROOT, LiveServer, live_server
from evaluation.samples import load_sample
from service.model import OnnxModel, resolve_version_dir
from tests.conftest import SERVED_VERSION, png_bytes

MODEL = "mnist-mlp"
COUNT = 16

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("triton-http")) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    images, _ = load_sample()
    return images[:COUNT]


@pytest.fixture(scope="module")
def expected(digits: np.ndarray) -> np.ndarray:
    """What the served ONNX model (the card's serving variant) answers for these digits."""
    model = OnnxModel(resolve_version_dir(ROOT / "models", MODEL, SERVED_VERSION))
    return model.predict(digits.reshape(-1, 784).astype(np.float32))


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, str(SERVED_VERSION))
    server = client.get_server_metadata()
    assert server["name"] == "mnist-serve" and "binary_tensor_data" in server["extensions"]
    metadata = client.get_model_metadata(MODEL)
    names = [tensor["name"] for tensor in metadata["inputs"]]
    assert names == ["pixels", "image_u8", "image"]
    assert (
        metadata["versions"] == [str(SERVED_VERSION)] and metadata["platform"] == "onnxruntime_onnx"
    )
    scales = {t["name"]: t["parameters"].get("pixel_scale") for t in metadata["inputs"]}
    assert scales["pixels"] == scales["image_u8"] == "0..255"


def _input(name: str, digits: np.ndarray, binary: bool) -> triton.InferInput:
    if name == "pixels":
        array = digits.reshape(-1, 784).astype(np.float32)
        tensor = triton.InferInput(name, list(array.shape), "FP32")
    elif name == "image_u8":
        array = digits
        tensor = triton.InferInput(name, list(array.shape), "UINT8")
    else:
        array = np.array([png_bytes(d) for d in digits], dtype=np.object_)
        tensor = triton.InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("name", ["pixels", "image_u8"])
def test_infer_matches_the_onnx_model(
    client: triton.InferenceServerClient,
    digits: np.ndarray,
    expected: np.ndarray,
    name: str,
    binary_in: bool,
    binary_out: bool,
) -> None:
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=binary_out),
        triton.InferRequestedOutput("digit", binary_data=binary_out),
    ]
    result = client.infer(
        MODEL, [_input(name, digits, binary_in)], outputs=outputs, request_id="r-1"
    )
    assert result.get_response()["id"] == "r-1"
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (COUNT, 10)
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert result.as_numpy("digit").tolist() == expected.argmax(axis=1).tolist()


def test_defaults_answer_every_output_in_binary(
    client: triton.InferenceServerClient, digits: np.ndarray, expected: np.ndarray
) -> None:
    """No outputs named: tritonclient asks for all of them as binary."""
    result = client.infer(
        MODEL, [_input("image_u8", digits, True)], model_version=str(SERVED_VERSION)
    )
    outputs = result.get_response()["outputs"]
    assert all("binary_data_size" in output["parameters"] for output in outputs)
    assert result.as_numpy("digit").tolist() == expected.argmax(axis=1).tolist()


def test_image_files_as_binary_bytes(
    client: triton.InferenceServerClient, digits: np.ndarray
) -> None:
    """PNG files in a BYTES tensor (4-byte length + bytes each), preprocessed like /v1."""
    _, labels = load_sample()
    result = client.infer(MODEL, [_input("image", digits, True)])
    assert result.as_numpy("digit").tolist() == labels[:COUNT].tolist()


@pytest.mark.parametrize("request_coding", [None, "gzip", "deflate"])
@pytest.mark.parametrize("response_coding", [None, "gzip", "deflate"])
def test_compressed_requests_and_answers(
    client: triton.InferenceServerClient,
    digits: np.ndarray,
    expected: np.ndarray,
    request_coding: str | None,
    response_coding: str | None,
) -> None:
    result = client.infer(
        MODEL,
        [_input("image_u8", digits, True)],
        request_compression_algorithm=request_coding,
        response_compression_algorithm=response_coding,
    )
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)


def test_unknown_model_or_version(client: triton.InferenceServerClient, digits: np.ndarray) -> None:
    tensor = _input("image_u8", digits, True)
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("no-such-model", [tensor])
    assert unknown.value.status() == "404" and "not found" in unknown.value.message()
    with pytest.raises(InferenceServerException) as version:
        client.infer(MODEL, [tensor], model_version="9")
    assert version.value.status() == "404" and "version" in version.value.message()
    assert not client.is_model_ready("no-such-model")


def test_malformed_tensors_are_400_with_a_message(
    client: triton.InferenceServerClient, digits: np.ndarray
) -> None:
    scaled = triton.InferInput("pixels", [1, 784], "FP32")
    scaled.set_data_from_numpy(digits[:1].reshape(1, 784).astype(np.float32) / 255)
    wrong_type = triton.InferInput("image_u8", [1, 784], "FP32")
    wrong_type.set_data_from_numpy(digits[:1].reshape(1, 784).astype(np.float32))
    blank = triton.InferInput("image_u8", [1, 28, 28], "UINT8")
    blank.set_data_from_numpy(np.zeros((1, 28, 28), np.uint8))
    cases = [(scaled, "multiply by 255"), (wrong_type, "datatype"), (blank, "blank")]
    for tensor, fragment in cases:
        with pytest.raises(InferenceServerException) as caught:
            client.infer(MODEL, [tensor])
        assert caught.value.status() == "400" and fragment in caught.value.message()


def test_async_requests_share_the_server(
    client: triton.InferenceServerClient, digits: np.ndarray, expected: np.ndarray
) -> None:
    """Several requests in flight at once (tritonclient's async_infer), each answered right."""
    pending = [
        client.async_infer(MODEL, [_input("image_u8", np.roll(digits, k, axis=0), True)])
        for k in range(6)
    ]
    for k, request in enumerate(pending):
        digits_out = request.get_result(timeout=30).as_numpy("digit")
        assert digits_out.tolist() == np.roll(expected.argmax(axis=1), k).tolist()


def test_log_names_the_binary_requests(server: LiveServer) -> None:
    assert '"route":"/v2/models/{name}/infer"' in server.log()
