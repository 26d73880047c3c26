"""Every input limit, against a real server with small limits: 413, 422, 408, 429.

Body size (declared and streamed), image pixel count and decompression bombs
(refused from the header, fast), images per request, JSON nesting depth, slow
and stalled clients (408 while the server keeps serving others), too many
requests at once (429), and connection-level abuse (slowloris, too many
connections) which happens before any ASGI code runs.
"""

from __future__ import annotations

import base64
import io
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from PIL import Image

from evaluation.live_server import LiveServer, live_server
from evaluation.samples import SEVEN_PNG
from tests.reliability.support import (
    PREDICTION,
    metric,
    post_seven,
    raw_connection,
    read_raw_response,
    scrape,
    wait_for_metric,
)

pytestmark = pytest.mark.slow

MAX_UPLOAD = 64 * 1024
MAX_ITEMS = 4
MAX_PIXELS = 1_000_000
BODY_TIMEOUT_S = 1.0
MAX_CONCURRENT = 3
B64_SEVEN = base64.b64encode(SEVEN_PNG).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "MNIST_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "MNIST_MAX_BATCH_ITEMS": str(MAX_ITEMS),
        "MNIST_MAX_IMAGE_PIXELS": str(MAX_PIXELS),
        "MNIST_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "MNIST_MAX_CONCURRENT_REQUESTS": str(MAX_CONCURRENT),
    }
    with live_server(tmp_path_factory.mktemp("limits"), env=env) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        yield http


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming width x height, and no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def black_png(width: int, height: int) -> bytes:
    """A real, fully decodable image that compresses to almost nothing (a mild bomb)."""
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- body size --------------------------------------------------------------------------


def test_declared_body_over_limit_is_413_before_the_body_is_sent(server: LiveServer) -> None:
    with raw_connection(server.url, timeout_s=5.0) as sock:
        sock.sendall(
            head(
                "/v1/predict",
                {"Content-Type": "image/png", "Content-Length": str(100 * MAX_UPLOAD)},
            )
        )  # and no body at all: the answer must not wait for it
        status, _, body = read_raw_response(sock)
    # 413, not the 408 a server waiting for the body would have sent at its deadline.
    assert status == 413, body
    assert "byte limit" in orjson.loads(body)["error"]


BODY_PATHS = [
    ("/v1/predict", "image/png"),
    ("/v1/predict/batch", "application/json"),
    ("/v2/models/mnist-mlp/infer", "application/json"),
]


@pytest.mark.parametrize(("path", "content_type"), BODY_PATHS)
def test_streamed_body_over_limit_is_413(server: LiveServer, path: str, content_type: str) -> None:
    """Chunked upload, no Content-Length: counted while it streams in, on every endpoint."""
    chunk = b" " * 16 * 1024
    with raw_connection(server.url, timeout_s=5.0) as sock:
        sock.sendall(head(path, {"Content-Type": content_type, "Transfer-Encoding": "chunked"}))
        for _ in range(MAX_UPLOAD // len(chunk) + 2):  # just over the limit, never finished
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        status, _, body = read_raw_response(sock)
    assert status == 413, body


def test_streamed_body_under_limit_is_accepted(client: httpx.Client) -> None:
    def pieces() -> Iterator[bytes]:
        for start in range(0, len(SEVEN_PNG), 50):
            yield SEVEN_PNG[start : start + 50]

    response = client.post("/v1/predict", content=pieces(), headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    assert response.json()["digit"] == 7


# -- images: pixel count and decompression bombs ---------------------------------------------


@pytest.mark.parametrize("size", [(50_000, 50_000), (1001, 1000), (MAX_PIXELS + 1, 1)])
def test_image_dimensions_are_checked_from_the_header(
    client: httpx.Client, size: tuple[int, int]
) -> None:
    response = client.post(
        "/v1/predict", content=png_header_only(*size), headers={"Content-Type": "image/png"}
    )
    # The image has no pixel data at all: a 413 can only come from its header.
    assert response.status_code == 413, response.text
    assert "pixels" in response.json()["error"]


def test_decompression_bomb_is_refused_fast_everywhere(client: httpx.Client) -> None:
    bomb = black_png(4000, 4000)  # 16 M pixels in a couple of KB
    assert len(bomb) < 8 * 1024
    bomb_b64 = base64.b64encode(bomb).decode()
    attempts = [
        client.build_request(
            "POST", "/v1/predict", content=bomb, headers={"Content-Type": "image/png"}
        ),
        client.build_request("POST", "/v1/predict", files={"file": ("b.png", bomb, "image/png")}),
        client.build_request("POST", "/v1/predict", json={"image": bomb_b64}),
        client.build_request("POST", "/v1/predict/batch", json={"images": [B64_SEVEN, bomb_b64]}),
        client.build_request(
            "POST",
            "/v2/models/mnist-mlp/infer",
            json={
                "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [bomb_b64]}]
            },
        ),
    ]
    for request in attempts:
        response = client.send(request)
        assert response.status_code == 413, (request.url, response.text)


# -- items per request and JSON shape -----------------------------------------------------


def test_batch_item_count_is_limited(client: httpx.Client) -> None:
    too_many = MAX_ITEMS + 1
    cases = [
        ("/v1/predict/batch", {"json": {"images": [B64_SEVEN] * too_many}}),
        ("/v1/predict/batch", {"files": [("files", ("d.png", SEVEN_PNG, "image/png"))] * too_many}),
        (
            "/v2/models/mnist-mlp/infer",
            {"json": {"inputs": [{"name": "pixels", "shape": [too_many, 784], "datatype": "FP32",
                                  "data": [0.0] * 784 * too_many}]}},
        ),
        (
            "/v2/models/mnist-mlp/infer",
            {"json": {"inputs": [{"name": "image", "shape": [too_many], "datatype": "BYTES",
                                  "data": [B64_SEVEN] * too_many}]}},
        ),
    ]  # fmt: skip
    for path, kwargs in cases:
        response = client.post(path, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 413, (path, response.text)
        assert str(MAX_ITEMS) in response.json()["error"]
    exactly = client.post("/v1/predict/batch", json={"images": [B64_SEVEN] * MAX_ITEMS})
    assert exactly.status_code == 200, exactly.text


def nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "body",
    [
        {"pixels": nested(9)},
        {"image": nested(12)},
        {"image": B64_SEVEN, "extra": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {}}}}}}}}},
    ],
    ids=["pixels", "image", "extra-field"],
)
def test_json_nesting_deeper_than_the_limit_is_422(client: httpx.Client, body: object) -> None:
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 422, response.text
    assert "nested deeper" in response.json()["error"]


def test_pathologically_deep_json_is_a_4xx_not_a_crash(client: httpx.Client) -> None:
    text = b'{"pixels":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    for path in ("/v1/predict", "/v1/predict/batch", "/v2/models/mnist-mlp/infer"):
        response = client.post(
            path, content=text[:MAX_UPLOAD], headers={"Content-Type": "application/json"}
        )
        assert 400 <= response.status_code < 500, (path, response.text)
    assert client.get("/healthz").status_code == 200


def test_v2_json_nesting_deeper_than_the_limit_is_refused(client: httpx.Client) -> None:
    """MNIST_MAX_JSON_DEPTH must hold on every JSON endpoint, the Open Inference one too."""
    body = {
        "inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}],
        "parameters": {"deep": nested(20)},
    }
    response = client.post("/v2/models/mnist-mlp/infer", json=body)
    assert response.status_code in (400, 422), response.text


# -- slow clients and concurrency ----------------------------------------------------------


def test_stalled_body_gets_408_while_others_are_served(
    server: LiveServer, client: httpx.Client
) -> None:
    in_flight = metric(scrape(server.url), "mnist_http_requests_in_flight")
    with raw_connection(server.url, timeout_s=BODY_TIMEOUT_S + 5) as sock:
        sock.sendall(
            head(
                "/v1/predict",
                {"Content-Type": "image/png", "Content-Length": str(len(SEVEN_PNG))},
            )
            + SEVEN_PNG[:100]
        )  # ...and the rest never comes
        wait_for_metric(server.url, "mnist_http_requests_in_flight", in_flight + 1)
        # Meanwhile everyone else is served normally.
        for _ in range(3):
            response = client.post(
                "/v1/predict", content=SEVEN_PNG, headers={"Content-Type": "image/png"}
            )
            assert response.status_code == 200, response.text
        status, _, body = read_raw_response(sock)
    assert status == 408, body
    wait_for_metric(server.url, "mnist_http_requests_in_flight", in_flight)


@pytest.mark.parametrize(("path", "content_type"), BODY_PATHS)
def test_stalled_body_is_408_on_every_endpoint(
    server: LiveServer, path: str, content_type: str
) -> None:
    with raw_connection(server.url, timeout_s=BODY_TIMEOUT_S + 5) as sock:
        sock.sendall(head(path, {"Content-Type": content_type, "Content-Length": "1000"}) + b"{")
        status, _, body = read_raw_response(sock)
    assert status == 408, body


def test_trickling_body_is_cut_at_the_deadline(server: LiveServer) -> None:
    """A byte at a time, each within any per-read timeout: the whole-body deadline still cuts."""
    with raw_connection(server.url, timeout_s=BODY_TIMEOUT_S + 5) as sock:
        started = time.monotonic()
        sock.sendall(head("/v1/predict", {"Content-Type": "image/png", "Content-Length": "10000"}))
        sock.setblocking(False)
        answer = b""
        for index in range(10_000):
            try:
                sock.send(b"\0")
                answer = sock.recv(65536)
            except BlockingIOError:
                pass
            if answer or time.monotonic() - started > BODY_TIMEOUT_S + 2:
                break
            time.sleep(0.05)  # the client's own trickle pace, not synchronisation
            assert index < 9_999
        sock.setblocking(True)
        if b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_too_many_requests_at_once_is_429_at_once(tmp_path: Path) -> None:
    """MAX_CONCURRENT stalled uploads hold every slot (and no line): the next request is
    shed from its head (its body never sent), probes still pass, and the uploads then
    complete."""
    env = {
        "MNIST_MAX_CONCURRENT_REQUESTS": str(MAX_CONCURRENT),
        "MNIST_MAX_WAITING_REQUESTS": "0",
        "MNIST_BODY_TIMEOUT_S": "60",
    }
    partial = head(
        "/v1/predict", {"Content-Type": "image/png", "Content-Length": str(len(SEVEN_PNG))}
    )
    with live_server(tmp_path, env=env) as slow_server:
        socks = [raw_connection(slow_server.url, timeout_s=30) for _ in range(MAX_CONCURRENT)]
        try:
            for sock in socks:
                sock.sendall(partial)
            wait_for_metric(slow_server.url, "mnist_http_requests_in_flight", MAX_CONCURRENT)
            with raw_connection(slow_server.url, timeout_s=30) as extra:
                extra.sendall(partial)  # the head alone is enough to be refused
                status, headers, body = read_raw_response(extra)
            assert status == 429, body
            assert headers["retry-after"] == "1"
            assert "too many requests" in orjson.loads(body)["error"]
            # Health probes are not traffic: never shed.
            assert httpx.get(f"{slow_server.url}/readyz", timeout=10).status_code == 200
            for sock in socks:  # finish the uploads: each completes normally
                sock.sendall(SEVEN_PNG)
            for sock in socks:
                assert read_raw_response(sock)[0] == 200
        finally:
            for sock in socks:
                sock.close()
        after = post_seven(slow_server.url)
        assert after.status_code == 200


# -- connection-level abuse (before any ASGI code runs) --------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "MNIST_MAX_CONNECTIONS": "8",
        "MNIST_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "MNIST_HEADER_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    with live_server(tmp_path_factory.mktemp("conns"), env=env) as running:
        yield running


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize(
    "opening", [b"", b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"], ids=["idle", "headers"]
)
def test_slowloris_connections_are_closed(small_server: LiveServer, opening: bytes) -> None:
    """A client that never finishes its request head must not hold a connection forever
    (4096 such sockets would lock everyone out). Expected: closed within the header
    deadline (+ slack); uvicorn itself has no header timeout."""
    with raw_connection(small_server.url, timeout_s=BODY_TIMEOUT_S + 2) as sock:
        if opening:
            sock.sendall(opening)
        assert _closed_by_server(sock), "the server kept a stalled connection open"


def test_connection_limit_answers_503_with_retry_after(small_server: LiveServer) -> None:
    """Past MNIST_MAX_CONNECTIONS (8) open connections: 503 with Retry-After, then closed."""
    held = [raw_connection(small_server.url) for _ in range(8)]  # accepted in order
    try:
        response = post_seven(small_server.url, timeout_s=5.0)
        assert response.status_code == 503, response.text
        assert response.headers.get("retry-after"), dict(response.headers)
    finally:
        for sock in held:
            sock.close()


def test_the_connection_limit_turns_away_newcomers_not_connections_being_served(
    tmp_path: Path,
) -> None:
    """Over MNIST_MAX_CONNECTIONS only a new connection's first request gets the 503: a
    connection already served goes on being served. Otherwise one client reconnecting
    at the limit pushes out another, which reconnects in turn."""
    with live_server(tmp_path, env={"MNIST_MAX_CONNECTIONS": "2"}) as server:
        served = raw_connection(server.url)
        crowd: list[socket.socket] = []
        try:
            served.sendall(PREDICTION)
            assert read_raw_response(served)[0] == 200
            crowd = [raw_connection(server.url) for _ in range(3)]  # 4 open: over the 2
            crowd[-1].sendall(PREDICTION)
            status, headers, _ = read_raw_response(crowd[-1])
            assert status == 503 and headers["connection"] == "close"
            served.sendall(PREDICTION)  # 3 still open, over the limit: served all the same
            status, _, body = read_raw_response(served)
            assert status == 200, body
        finally:
            for sock in [served, *crowd]:
                sock.close()


def test_an_upgrade_request_holds_no_slot(tmp_path: Path) -> None:
    """The service has no WebSocket endpoint: `Upgrade: websocket` is answered like any
    request (4xx), and the slot it ran in is free again for the next client."""
    upgrade = (
        b"GET /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 0\r\n\r\n"
    )
    env = {"MNIST_MAX_CONCURRENT_REQUESTS": "1", "MNIST_MAX_WAITING_REQUESTS": "0"}
    with live_server(tmp_path, env=env) as server:
        for _ in range(3):
            with raw_connection(server.url) as sock:
                sock.sendall(upgrade)
                status, _, body = read_raw_response(sock)
            assert 400 <= status < 500 and status != 429, (status, body)
        assert post_seven(server.url).status_code == 200  # the one slot is free
