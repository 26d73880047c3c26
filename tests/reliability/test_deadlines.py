"""Deadlines (504, the queue slot freed) and client disconnects (no inference), on a real server.

The server holds rows for a second before flushing a batch (MNIST_MAX_QUEUE_DELAY_MS),
so a request is reliably still queued when its deadline passes or its client leaves.
"No inference" is proven by the batch-size histogram: after the abandoned request,
one normal request must add exactly one batch holding exactly one row.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from evaluation.live_server import LiveServer, live_server
from evaluation.loadgen import build_request
from evaluation.samples import SEVEN_PNG
from tests.reliability.support import Samples, metric, raw_connection, scrape, wait_for_metric

pytestmark = pytest.mark.slow

SLOW_FLUSH = {"MNIST_MAX_QUEUE_DELAY_MS": "1000", "MNIST_MAX_BATCH_SIZE": "64"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("deadlines"), env=SLOW_FLUSH) as running:
        yield running


@pytest.fixture(scope="module")
def short_deadline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {**SLOW_FLUSH, "MNIST_REQUEST_TIMEOUT_S": "0.05"}
    with live_server(tmp_path_factory.mktemp("short"), env=env) as running:
        yield running


def _predict(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/predict",
        content=SEVEN_PNG,
        headers={"Content-Type": "image/png", **(headers or {})},
        timeout=10.0,
    )


def _batches(samples: Samples) -> tuple[float, float]:
    """Batches run and rows inferred, over every served version."""

    def total(name: str) -> float:
        return sum(value for (key, _), value in samples.items() if key == name)

    return total("mnist_batch_size_rows_count"), total("mnist_batch_size_rows_sum")


def _assert_next_request_runs_alone(url: str, before: Samples) -> None:
    """A normal request now adds exactly one batch of one row: nothing abandoned ran."""
    response = _predict(url)
    assert response.status_code == 200, response.text
    count, rows = _batches(scrape(url))
    count0, rows0 = _batches(before)
    assert (count - count0, rows - rows0) == (1, 1), "an abandoned request was inferred"


def test_header_deadline_answers_504_and_frees_the_slot(server: LiveServer) -> None:
    before = scrape(server.url)
    response = _predict(server.url, {"X-Request-Timeout-Ms": "1"})
    # 504 from the deadline: the batch it waited for never ran (checked below).
    assert response.status_code == 504, response.text
    assert "deadline" in response.json()["error"]
    after = wait_for_metric(server.url, "mnist_queue_depth_rows", 0)
    assert metric(after, "mnist_http_requests_in_flight") == 0
    timeouts = metric(after, "mnist_rejections_total", reason="timeout")
    assert timeouts - metric(before, "mnist_rejections_total", reason="timeout") == 1
    _assert_next_request_runs_alone(server.url, after)


def test_deadline_setting_answers_504(short_deadline_server: LiveServer) -> None:
    url = short_deadline_server.url
    before = scrape(url)
    response = _predict(url)  # no header: MNIST_REQUEST_TIMEOUT_S=0.05 applies
    assert response.status_code == 504, response.text
    # The header can only shorten the deadline, never extend it past the setting.
    longer = _predict(url, {"X-Request-Timeout-Ms": "60000"})
    assert longer.status_code == 504, longer.text
    after = wait_for_metric(url, "mnist_queue_depth_rows", 0)
    assert _batches(after) == _batches(before), "a timed-out request was inferred"


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf", "1e12"])
def test_invalid_deadline_header_is_422(server: LiveServer, value: str) -> None:
    response = _predict(server.url, {"X-Request-Timeout-Ms": value})
    assert response.status_code == 422, response.text
    assert "x-request-timeout-ms" in response.json()["error"]


def test_disconnected_client_costs_no_inference(server: LiveServer) -> None:
    before = scrape(server.url)
    gone = metric(before, "mnist_rejections_total", reason="client_disconnected")
    with raw_connection(server.url) as sock:
        sock.sendall(build_request("/v1/predict", SEVEN_PNG, "image/png"))
        wait_for_metric(server.url, "mnist_queue_depth_rows", 1)  # queued, waiting 1 s
    # The socket is closed: the server must notice, answer 499 to nobody, and drop the row.
    after = wait_for_metric(
        server.url, "mnist_rejections_total", gone + 1, reason="client_disconnected"
    )
    assert metric(after, "mnist_queue_depth_rows") == 0
    assert _batches(after) == _batches(before)
    _assert_next_request_runs_alone(server.url, after)
