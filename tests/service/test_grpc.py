"""The inference protocol over gRPC: unmodified `tritonclient.grpc` and the raw stubs
against real mnist-serve processes (each on free HTTP and gRPC ports)."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from evaluation.live_server import ROOT, LiveServer, live_server
from evaluation.samples import load_sample
from service.grpc.methods import InferenceStub
from service.grpc.protocol import grpc_predict_v2_pb2 as pb
from service.model import OnnxModel, resolve_version_dir
from tests.conftest import SERVED_VERSION, png_bytes

MODEL = "mnist-mlp"
COUNT = 16
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("grpc")) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.grpc_target)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(server: LiveServer) -> Iterator[InferenceStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield InferenceStub(channel)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    images, _ = load_sample()
    return images[:COUNT]


@pytest.fixture(scope="module")
def expected(digits: np.ndarray) -> np.ndarray:
    model = OnnxModel(resolve_version_dir(ROOT / "models", MODEL, SERVED_VERSION))
    return model.predict(digits.reshape(-1, 784).astype(np.float32))


def u8_input(images: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput("image_u8", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
    return tensor


def test_health_and_metadata(client: triton.InferenceServerClient, server: LiveServer) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, str(SERVED_VERSION))
    assert client.get_server_metadata().name == "mnist-serve"
    metadata = client.get_model_metadata(MODEL)
    assert [t.name for t in metadata.inputs] == ["pixels", "image_u8", "image"]
    assert [t.name for t in metadata.outputs] == ["probabilities", "digit"]
    assert (
        list(metadata.versions) == [str(SERVED_VERSION)] and metadata.platform == "onnxruntime_onnx"
    )
    with grpc.insecure_channel(server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService", "liveness"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("name", ["pixels", "image_u8", "image"])
def test_raw_infer_matches_the_onnx_model(
    client: triton.InferenceServerClient, digits: np.ndarray, expected: np.ndarray, name: str
) -> None:
    if name == "pixels":
        tensor = triton.InferInput(name, [COUNT, 784], "FP32")
        tensor.set_data_from_numpy(digits.reshape(-1, 784).astype(np.float32))
    elif name == "image_u8":
        tensor = u8_input(digits)
    else:
        tensor = triton.InferInput(name, [COUNT], "BYTES")
        tensor.set_data_from_numpy(np.array([png_bytes(d) for d in digits], dtype=np.object_))
    result = client.infer(MODEL, [tensor], request_id="g-1")
    assert result.get_response().id == "g-1"
    if name != "image":  # image files go through preprocessing: same digits, not same floats
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-6)
    assert result.as_numpy("digit").tolist() == expected.argmax(axis=1).tolist()


def test_typed_contents_answer_typed(
    stub: InferenceStub, digits: np.ndarray, expected: np.ndarray
) -> None:
    request = pb.ModelInferRequest(model_name=MODEL, model_version=str(SERVED_VERSION))
    tensor = request.inputs.add(name="image_u8", datatype="UINT8", shape=[COUNT, 28, 28])
    tensor.contents.uint_contents.extend(digits.reshape(-1).tolist())
    request.outputs.add(name="digit")
    answer = stub.ModelInfer(request, timeout=30)
    assert not answer.raw_output_contents
    (output,) = answer.outputs
    assert output.name == "digit" and list(output.shape) == [COUNT]
    assert list(output.contents.int64_contents) == expected.argmax(axis=1).tolist()


def test_errors_map_to_grpc_status(
    client: triton.InferenceServerClient, stub: InferenceStub, digits: np.ndarray
) -> None:
    def status_of(call: Any) -> tuple[str, str]:
        with pytest.raises(InferenceServerException) as caught:
            call()
        return caught.value.status(), caught.value.message()

    code, message = status_of(lambda: client.infer("no-such-model", [u8_input(digits)]))
    assert code == "StatusCode.NOT_FOUND" and "not found" in message
    code, _ = status_of(lambda: client.infer(MODEL, [u8_input(digits)], model_version="9"))
    assert code == "StatusCode.NOT_FOUND"
    scaled = triton.InferInput("pixels", [1, 784], "FP32")
    scaled.set_data_from_numpy(digits[:1].reshape(1, 784).astype(np.float32) / 255)
    code, message = status_of(lambda: client.infer(MODEL, [scaled]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "multiply by 255" in message
    wrong = triton.InferInput("image_u8", [COUNT, 28, 28], "FP32")
    wrong.set_data_from_numpy(digits.astype(np.float32))
    code, message = status_of(lambda: client.infer(MODEL, [wrong]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "datatype" in message
    rows = np.resize(digits, (4096, 28, 28))  # 3.2 MB: within the message limit
    code, message = status_of(lambda: client.infer(MODEL, [u8_input(rows)]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "4096 images" in message
    huge = pb.ModelInferRequest(model_name=MODEL, raw_input_contents=[bytes(17 * 2**20)])
    huge.inputs.add(name="image_u8", datatype="UINT8", shape=[17 * 2**20 // 784, 28, 28])
    with pytest.raises(grpc.RpcError) as too_big:
        stub.ModelInfer(huge, timeout=30)
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (too_big.value.details() or "")


def test_metrics_and_access_log_name_the_protocol(
    client: triton.InferenceServerClient, server: LiveServer, digits: np.ndarray
) -> None:
    client.infer(MODEL, [u8_input(digits)])
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    line = re.search(
        r'^mnist_http_requests_total\{(?=[^}]*protocol="grpc")(?=[^}]*status="200")'
        r'(?=[^}]*route="/inference.GRPCInferenceService/ModelInfer")[^}]*\} ([0-9.]+)$',
        metrics,
        re.M,
    )
    assert line is not None and float(line.group(1)) >= 1
    assert '"protocol":"grpc"' in server.log()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=st.sampled_from(["image_u8", "pixels", "image", "x"]),
    datatype=st.sampled_from(["UINT8", "FP32", "BYTES", "INT64", ""]),
    shape=st.lists(st.integers(-3, 2000), max_size=4),
    raw=st.one_of(st.none(), st.binary(max_size=5000)),
    values=st.lists(st.integers(0, 300), max_size=2000),
    inputs=st.integers(0, 2),
    outputs=st.lists(st.sampled_from(["digit", "probabilities", "x"]), max_size=3),
)
def test_fuzzed_tensors_are_never_internal(
    stub: InferenceStub,
    name: str,
    datatype: str,
    shape: list[int],
    raw: bytes | None,
    values: list[int],
    inputs: int,
    outputs: list[str],
) -> None:
    request = pb.ModelInferRequest(model_name=MODEL)
    for _ in range(inputs):
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if raw is None:
            tensor.contents.uint_contents.extend(values)
    if raw is not None:
        request.raw_input_contents.append(raw)
    for output in outputs:
        request.outputs.add(name=output)
    try:
        stub.ModelInfer(request, timeout=30)
    except grpc.RpcError as error:
        assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
        assert error.details()


def test_api_keys_from_call_metadata(tmp_path: Path, digits: np.ndarray) -> None:
    with live_server(tmp_path, env={"MNIST_API_KEYS": "sekrit"}) as live:
        client = triton.InferenceServerClient(live.grpc_target)
        try:
            assert client.is_server_live()  # health stays open, as over HTTP
            with pytest.raises(InferenceServerException) as refused:
                client.infer(MODEL, [u8_input(digits)])
            assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
            with pytest.raises(InferenceServerException):
                client.infer(MODEL, [u8_input(digits)], headers={"x-api-key": "wrong"})
            for headers in ({"x-api-key": "sekrit"}, {"authorization": "Bearer sekrit"}):
                result = client.infer(MODEL, [u8_input(digits)], headers=headers)
                assert result.as_numpy("digit").shape == (COUNT,)
        finally:
            client.close()


def _batch_count(url: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    count = re.search(r"^mnist_batch_size_rows_count(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    total = re.search(r"^mnist_batch_size_rows_sum(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    assert count and total
    return float(count.group(1)), float(total.group(1))


def test_http_and_grpc_rows_share_a_batch(tmp_path: Path, digits: np.ndarray) -> None:
    """A batch of 8 rows waits up to 1 s to fill: 4 rows over HTTP and 4 over gRPC, sent
    together, fill it. On a loaded machine one of them may come too late for the window,
    so up to 3 rounds are tried; one must form a single batch of 8."""
    args = ("--max-batch-size", "8", "--max-queue-delay-ms", "1000")
    _, labels = load_sample()
    with live_server(tmp_path, *args) as live:
        grpc_client = triton.InferenceServerClient(live.grpc_target)
        http_client = triton_http.InferenceServerClient(live.url.removeprefix("http://"))
        http_input = triton_http.InferInput("image_u8", [4, 28, 28], "UINT8")
        http_input.set_data_from_numpy(digits[:4])
        rounds = []
        try:
            with ThreadPoolExecutor(2) as pool:
                for _ in range(3):
                    before = _batch_count(live.url)
                    over_grpc = pool.submit(grpc_client.infer, MODEL, [u8_input(digits[4:8])])
                    over_http = pool.submit(http_client.infer, MODEL, [http_input])
                    grpc_digits = over_grpc.result(timeout=60).as_numpy("digit").tolist()
                    http_digits = over_http.result(timeout=60).as_numpy("digit").tolist()
                    assert http_digits + grpc_digits == labels[:8].tolist()
                    after = _batch_count(live.url)
                    rounds.append((after[0] - before[0], after[1] - before[1]))
                    if rounds[-1] == (1, 8):
                        break
        finally:
            grpc_client.close()
            http_client.close()
        assert rounds[-1] == (1, 8), rounds


def test_deadline_exceeded(tmp_path: Path, digits: np.ndarray) -> None:
    """A row waits up to 1 s for its batch to fill; the call's 0.3 s deadline ends it first."""
    with live_server(tmp_path, "--max-batch-size", "64", "--max-queue-delay-ms", "1000") as live:
        client = triton.InferenceServerClient(live.grpc_target)
        try:
            with pytest.raises(InferenceServerException) as late:
                client.infer(MODEL, [u8_input(digits[:1])], client_timeout=0.3)
            assert late.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        finally:
            client.close()
        for _ in range(400):  # bounded poll of another process: its rows are given back
            text = httpx.get(live.url + "/metrics", timeout=10).text
            if re.search(r"^mnist_queue_depth_rows 0\.0$", text, re.M):
                break
        assert re.search(r"^mnist_queue_depth_rows 0\.0$", text, re.M), "rows still queued"


def test_drain_finishes_calls_in_flight_and_refuses_new_ones(
    tmp_path: Path, digits: np.ndarray
) -> None:
    args = ("--max-batch-size", "64", "--max-queue-delay-ms", "1000")
    with live_server(tmp_path, *args) as live:
        client = triton.InferenceServerClient(live.grpc_target)
        started = threading.Event()

        def in_flight() -> np.ndarray:
            started.set()
            answer: np.ndarray = client.infer(MODEL, [u8_input(digits[:2])]).as_numpy("digit")
            return answer

        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(in_flight)
            started.wait(10)
            # The call is queued once the metrics show its rows (bounded poll of another process).
            for _ in range(400):
                text = httpx.get(live.url + "/metrics", timeout=10).text
                if re.search(r"^mnist_queue_depth_rows [1-9]", text, re.M):
                    break
            live.process.send_signal(signal.SIGTERM)
            for _ in range(400):  # bounded: until the process says it is draining
                if not client.is_server_ready():
                    break
            with pytest.raises(InferenceServerException) as refused:
                client.infer(MODEL, [u8_input(digits[:2])])
            assert refused.value.status() == "StatusCode.UNAVAILABLE"
            _, labels = load_sample()
            assert first.result(timeout=30).tolist() == labels[:2].tolist()
        client.close()
        assert live.process.wait(timeout=30) == 0


def test_every_worker_serves_grpc_on_the_same_port(tmp_path: Path) -> None:
    """SO_REUSEPORT: connections spread over the workers, told apart by request-id prefix."""
    with live_server(tmp_path, "--workers", "2") as live:
        deadline = time.monotonic() + 60
        while live.log().count('"grpc serving"') < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # polling another process's log until both workers listen
        assert live.log().count('"grpc serving"') == 2
        prefixes = set()
        for _ in range(40):  # a fresh channel (connection) each time
            with grpc.insecure_channel(live.grpc_target) as channel:
                stub = InferenceStub(channel)
                request = pb.ModelReadyRequest(name=MODEL)
                answer, call = stub.ModelReady.with_call(request, timeout=10)
                assert answer.ready
                metadata = dict(call.initial_metadata())
                prefixes.add(str(metadata["x-request-id"])[:12])
            if len(prefixes) == 2:
                break
        assert len(prefixes) == 2
