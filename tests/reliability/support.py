"""Shared helpers of the reliability tests: test images, metrics scraping, raw sockets."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from evaluation.live_server import LiveServer, live_server
from evaluation.loadgen import build_request, host_port
from evaluation.samples import SEVEN_PNG

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of `url`/metrics keyed by (name, labels)."""
    response = httpx.get(f"{url}/metrics", timeout=5.0)
    response.raise_for_status()
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def metric(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def post_seven(url: str, timeout_s: float = 10.0) -> httpx.Response:
    """One prediction of a 28x28 PNG of a 7, on a connection of its own."""
    return httpx.post(
        f"{url}/v1/predict",
        content=SEVEN_PNG,
        headers={"Content-Type": "image/png"},
        timeout=timeout_s,
    )


PREDICTION = build_request("/v1/predict", SEVEN_PNG, "image/png")  # raw HTTP/1.1 bytes


@contextmanager
def the_only_slot_held(
    directory: Path, *, waiting: int, env: dict[str, str] | None = None
) -> Iterator[tuple[LiveServer, socket.socket]]:
    """A live server with one slot, held ~1 s by a prediction on the yielded socket
    (it waits for its batch to fill), and a line of `waiting` requests behind it."""
    settings = {
        **(env or {}),
        "MNIST_MAX_CONCURRENT_REQUESTS": "1",
        "MNIST_MAX_WAITING_REQUESTS": str(waiting),
        "MNIST_MAX_BATCH_SIZE": "64",
        "MNIST_MAX_QUEUE_DELAY_MS": "1000",
    }
    with live_server(directory, env=settings) as server:
        holder = raw_connection(server.url)
        try:
            holder.sendall(PREDICTION)
            wait_for_metric(server.url, "mnist_queue_depth_rows", 1)
            yield server, holder
        finally:
            holder.close()


def raw_connection(url: str, timeout_s: float = 10.0) -> socket.socket:
    sock = socket.create_connection(host_port(url), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_raw_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one Content-Length HTTP/1.1 response from a blocking socket (its own timeout)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} bytes: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside the body")
        body += chunk
    return int(status_line.split(" ", 2)[1]), headers, body[:length]


def wait_for_metric(
    url: str, name: str, wanted: float, timeout_s: float = 10.0, **labels: str
) -> Samples:
    """Bounded polling of a server gauge/counter (an external process: no event to await)."""
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        samples = scrape(url)
        seen = metric(samples, name, **labels)
        if seen == wanted:
            return samples
        time.sleep(0.01)
    raise AssertionError(f"{name}{labels} stayed {seen}, never reached {wanted}")
