"""A real service scraped by a real Prometheus, shared by the deploy tests."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pytest

from evaluation.live_server import live_server
from tests.deploy.prometheus_server import (
    JOB,
    MonitoredService,
    Prometheus,
    poll,
    prometheus_server,
    require_binary,
)

ROOT = Path(__file__).resolve().parents[2]
SCRAPE_WAIT_S = 20.0


def sample_pixels(count: int) -> list[list[list[int]]]:
    raw = gzip.decompress((ROOT / "tests/data/t10k-sample1000-images-idx3-ubyte.gz").read_bytes())
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:count]
    return [image.tolist() for image in images]


def send_round(client: httpx.Client, pixels: list[list[list[int]]]) -> tuple[int, int]:
    """Singles, one batch and one bad request; returns (images classified, refused)."""
    for image in pixels:
        assert client.post("/v1/predict", json={"pixels": image}).status_code == 200
    batch = {
        "inputs": [
            {
                "name": "image_u8",
                "datatype": "UINT8",
                "shape": [len(pixels), 28, 28],
                "data": np.asarray(pixels, dtype=np.uint8).ravel().tolist(),
            }
        ]
    }
    assert client.post("/v2/models/mnist-mlp/infer", json=batch).status_code == 200
    bad = client.post("/v1/predict", content=b"not an image", headers={"content-type": "image/png"})
    assert bad.status_code == 422
    return 2 * len(pixels), 1


def scraped_all(prometheus: Prometheus, predictions: int) -> bool:
    return prometheus.scalar("sum(mnist_predictions_total)") == predictions


@pytest.fixture(scope="session")
def monitored_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitoredService]:
    require_binary("prometheus")
    folder = tmp_path_factory.mktemp("monitored")
    with live_server(folder) as service:
        target = service.url.removeprefix("http://")
        with prometheus_server(folder / "prometheus", JOB, [target]) as prometheus:
            poll(
                "the service target to be up",
                lambda: [t for t in prometheus.targets(JOB) if t["health"] == "up"],
                SCRAPE_WAIT_S,
            )
            predictions = refused = 0
            with httpx.Client(base_url=service.url, timeout=10) as client:
                # Two rounds, each waited for in Prometheus, so rate() sees an increase.
                for pixels in (sample_pixels(12), sample_pixels(20)[12:]):
                    classified, rejected = send_round(client, pixels)
                    predictions, refused = predictions + classified, refused + rejected
                    poll(
                        f"Prometheus to see {predictions} predictions",
                        partial(scraped_all, prometheus, predictions),
                        SCRAPE_WAIT_S,
                    )
            yield MonitoredService(service, prometheus, predictions, refused)
