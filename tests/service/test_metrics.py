"""`/metrics` through the real app: parse the exposition text, send known
requests, and check that every metric moved by exactly what those requests imply.

Each test builds its own app (its own registry), and compares scrapes taken
before and after, so the assertions are about deltas caused by the test alone.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from evaluation.live_server import live_server
from service.app import create_app
from service.config import Settings
from service.model import resolve_version_dir
from tests.conftest import SERVED_VERSION

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
SAMPLE_IMAGES = ROOT / "tests" / "data" / "t10k-sample1000-images-idx3-ubyte.gz"
SERVED = str(SERVED_VERSION)  # the version label of every prediction metric
PROBES = ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of the exposition text, keyed by (sample name, labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse_metrics(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; a labelled child not created yet counts as 0."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def label_values(samples: Samples, label: str) -> set[str]:
    return {v for (_, ls), _ in samples.items() for k, v in ls if k == label}


def mnist_digits(count: int) -> np.ndarray:
    raw = gzip.decompress(SAMPLE_IMAGES.read_bytes())
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:count]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def noise(count: int) -> list[list[list[int]]]:
    rng = np.random.default_rng(4)
    return [rng.integers(0, 256, (28, 28)).tolist() for _ in range(count)]


@pytest.fixture(autouse=True)
def _single_process_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def make_client(**overrides: object) -> TestClient:
    settings = Settings.model_validate({"model_repository": MODELS, **overrides})
    return TestClient(create_app(settings))


@pytest.fixture
def client() -> Iterator[TestClient]:
    with make_client() as test_client:
        yield test_client


def test_requests_counted_by_route_template_method_and_status(client: TestClient) -> None:
    before = scrape(client)
    for pixels in mnist_digits(3):
        assert client.post("/v1/predict", json={"pixels": pixels.tolist()}).status_code == 200
    assert client.get("/v1/models").status_code == 200
    assert client.get("/v1/predict").status_code == 405
    assert client.post("/v1/predict", content=b"x", headers={"content-type": "text/plain"})
    after = scrape(client)

    requests = "mnist_http_requests_total"
    assert (
        delta(
            before,
            after,
            requests,
            route="/v1/predict",
            protocol="http",
            method="POST",
            status="200",
        )
        == 3
    )
    assert (
        delta(
            before, after, requests, route="/v1/models", protocol="http", method="GET", status="200"
        )
        == 1
    )
    assert (
        delta(
            before,
            after,
            requests,
            route="/v1/predict",
            protocol="http",
            method="GET",
            status="405",
        )
        == 1
    )
    assert (
        delta(
            before,
            after,
            requests,
            route="/v1/predict",
            protocol="http",
            method="POST",
            status="415",
        )
        == 1
    )
    assert total(after, requests) - total(before, requests) == 6


def test_duration_histogram_counts_every_request(client: TestClient) -> None:
    before = scrape(client)
    for pixels in mnist_digits(4):
        client.post("/v1/predict", json={"pixels": pixels.tolist()})
    after = scrape(client)

    name = "mnist_http_request_duration_seconds"
    assert delta(before, after, f"{name}_count", route="/v1/predict", protocol="http") == 4
    assert (
        delta(before, after, f"{name}_bucket", route="/v1/predict", protocol="http", le="+Inf") == 4
    )
    assert delta(before, after, f"{name}_sum", route="/v1/predict", protocol="http") > 0
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (n, labels), v in after.items()
        if n == f"{name}_bucket" and dict(labels)["route"] == "/v1/predict"
    )
    counts = [count for _, count in buckets]
    assert counts == sorted(counts), "histogram buckets must be cumulative"
    assert len(buckets) >= 10, "enough buckets for a useful p99"


def test_predictions_by_digit_batch_size_and_queue_wait(client: TestClient) -> None:
    digits = mnist_digits(20)
    before = scrape(client)
    images = [base64.b64encode(png(pixels)).decode() for pixels in digits]
    batch = client.post("/v1/predict/batch", json={"images": images})
    assert batch.status_code == 200
    singles = [
        client.post("/v1/predict", content=png(p), headers={"content-type": "image/png"})
        for p in digits[:3]
    ]
    after = scrape(client)

    answered = [item["digit"] for item in batch.json()["predictions"]]
    answered += [single.json()["digit"] for single in singles]
    for digit, count in Counter(answered).items():
        assert (
            delta(before, after, "mnist_predictions_total", version=SERVED, digit=str(digit))
            == count
        )
    assert total(after, "mnist_predictions_total") - total(before, "mnist_predictions_total") == 23
    assert label_values(after, "digit") <= {str(d) for d in range(10)}

    # One request of 20 rows runs as one ORT call of 20; each single as a call of 1.
    # Every prediction metric names the version that answered.
    rows = "mnist_batch_size_rows"
    assert delta(before, after, f"{rows}_count", version=SERVED) == 4
    assert delta(before, after, f"{rows}_sum", version=SERVED) == 23
    assert delta(before, after, f"{rows}_bucket", version=SERVED, le="1.0") == 3
    assert delta(before, after, f"{rows}_bucket", version=SERVED, le="16.0") == 3
    assert delta(before, after, f"{rows}_bucket", version=SERVED, le="32.0") == 4
    assert delta(before, after, "mnist_inference_duration_seconds_count", version=SERVED) == 4
    # One queue-wait observation per request, whatever its row count.
    assert delta(before, after, "mnist_queue_wait_seconds_count", version=SERVED) == 4
    assert value(after, "mnist_queue_depth_rows") == 0
    assert value(after, "mnist_http_requests_in_flight") == 0


def test_every_digit_series_exists_before_any_prediction(client: TestClient) -> None:
    # Created at 0, so Prometheus' rate()/increase() count a digit's first prediction too.
    samples = scrape(client)
    for digit in range(10):
        key = ("mnist_predictions_total", frozenset({("version", SERVED), ("digit", str(digit))}))
        assert samples.get(key) == 0, digit


def test_batch_size_buckets_reach_the_configured_maximum() -> None:
    with make_client(max_batch_size=48) as client:
        samples = scrape(client)
    bounds = {
        dict(ls)["le"] for (n, ls), _ in samples.items() if n == "mnist_batch_size_rows_bucket"
    }
    assert "48.0" in bounds
    assert max(float(b) for b in bounds if b != "+Inf") == 48


def test_rejections_counted_by_reason() -> None:
    with make_client(max_upload_bytes=20_000) as client:
        before = scrape(client)
        image = {"content-type": "image/png"}
        assert client.post("/v1/predict", content=b"not an image", headers=image).status_code == 422
        text = {"content-type": "text/plain"}
        assert client.post("/v1/predict", content=b"seven", headers=text).status_code == 415
        too_big = client.post("/v1/predict", content=b"\0" * 30_000, headers=image)
        assert too_big.status_code == 413
        bad_json = client.post("/v1/predict", json={"image": "%%%"})
        assert bad_json.status_code == 422
        slow = client.post(
            "/v1/predict",
            json={"pixels": mnist_digits(1)[0].tolist()},
            headers={"X-Request-Timeout-Ms": "0.001"},
        )
        assert slow.status_code == 504
        after = scrape(client)

    reasons = {
        "invalid_image": 1,
        "unsupported_media_type": 1,
        "too_large": 1,
        "invalid_input": 1,
        "timeout": 1,
    }
    for reason, count in reasons.items():
        assert delta(before, after, "mnist_rejections_total", reason=reason) == count, reason
    assert total(after, "mnist_rejections_total") - total(before, "mnist_rejections_total") == 5


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"max_queue_size": 1}, "queue_full"),  # the batch queue holds one row
        ({"max_concurrent_requests": 1}, "too_many_requests"),  # one request at a time
    ],
)
def test_overload_rejections_match_429_answers(limits: dict[str, int], reason: str) -> None:
    # A long batching delay keeps the first request waiting while the others
    # arrive, so every later one meets the limit and is refused at once.
    with make_client(max_queue_delay_ms=500, **limits) as client:
        before = scrape(client)
        body = {"pixels": mnist_digits(1)[0].tolist()}
        with ThreadPoolExecutor(6) as pool:
            statuses = list(
                pool.map(lambda _: client.post("/v1/predict", json=body).status_code, range(6))
            )
        after = scrape(client)

    refused = statuses.count(429)
    assert refused >= 1 and statuses.count(200) >= 1, statuses
    assert refused + statuses.count(200) == 6
    assert delta(before, after, "mnist_rejections_total", reason=reason) == refused
    assert total(after, "mnist_rejections_total") - total(before, "mnist_rejections_total") == (
        refused
    )
    if reason == "queue_full":  # refused after routing, so counted as a request of its route
        answered_429 = delta(
            before, after, "mnist_http_requests_total", route="/v1/predict", protocol="http",
            method="POST", status="429",
        )  # fmt: skip
        assert answered_429 == refused


def test_model_info_labels_match_the_served_model(client: TestClient) -> None:
    card = json.loads((resolve_version_dir(MODELS, "mnist-mlp", None) / "model.json").read_text())
    variant = card.get("serving_variant")  # the card chooses which file is served
    served = card["variants"][variant]["file"] if variant else card["file"]
    model_file = resolve_version_dir(MODELS, "mnist-mlp", None) / served
    samples = scrape(client)
    info = [(dict(ls), v) for (n, ls), v in samples.items() if n == "mnist_model_info"]
    assert len(info) == 1
    labels, number = info[0]
    assert number == 1
    assert labels == {
        "name": card["name"],
        "version": str(card["version"]),
        "variant": variant or "base",
        "sha256": hashlib.sha256(model_file.read_bytes()).hexdigest(),
    }


def test_low_confidence_counter_follows_the_threshold() -> None:
    threshold = 0.95
    with make_client(low_confidence_threshold=threshold) as client:
        before = scrape(client)
        bodies = [{"pixels": p} for p in noise(6)] + [
            {"pixels": p.tolist()} for p in mnist_digits(6)
        ]
        confidences = [client.post("/v1/predict", json=b).json()["confidence"] for b in bodies]
        after = scrape(client)

    expected = sum(confidence < threshold for confidence in confidences)
    assert expected > 0, "random noise should not be classified with 95% confidence"
    assert (
        delta(before, after, "mnist_low_confidence_predictions_total", version=SERVED) == expected
    )


def test_probes_and_metrics_are_not_request_traffic(client: TestClient) -> None:
    before = scrape(client)
    for _ in range(3):
        for path in PROBES:
            assert client.get(path).status_code == 200
    after = scrape(client)

    requests = "mnist_http_requests_total"
    assert total(after, requests) == total(before, requests)
    routes = label_values(after, "route")
    assert not routes & set(PROBES)


def test_route_labels_are_templates_never_raw_paths(client: TestClient) -> None:
    assert client.get("/nope").status_code == 404
    assert client.get("/nope/../etc/passwd?x=1").status_code == 404
    assert client.get("/v2/models/unknown-model").status_code == 404
    assert client.get("/v2/models/mnist-mlp/versions/999").status_code == 404
    samples = scrape(client)

    requests = "mnist_http_requests_total"
    assert (
        value(samples, requests, route="unmatched", protocol="http", method="GET", status="404")
        == 2
    )
    assert (
        value(
            samples,
            requests,
            route="/v2/models/{name}",
            protocol="http",
            method="GET",
            status="404",
        )
        == 1
    )
    templated = "/v2/models/{name}/versions/{version}"
    assert (
        value(samples, requests, route=templated, protocol="http", method="GET", status="404") == 1
    )
    templates = set(client.get("/openapi.json").json()["paths"])
    assert label_values(samples, "route") <= templates | {"unmatched"}


def worker_pids(metrics_dir: Path, expected: int = 2, timeout_s: float = 30.0) -> set[str]:
    """The pids that wrote multiprocess files; polled, as a loaded machine may start
    the second worker a little after the first answered /readyz."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = {path.stem.rsplit("_", 1)[-1] for path in metrics_dir.glob("*.db")}
        if len(pids) >= expected or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)  # polling files written by another process, bounded above


@pytest.mark.slow
def test_two_workers_aggregate_their_counters(tmp_path: Path) -> None:
    """Requests over fresh connections land on either worker; every scrape, whichever
    worker answers it, must show the sum over both (multiprocess mode)."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale file from an earlier run")
    requests, images_per_request = 24, 2
    body = {"images": [base64.b64encode(png(p)).decode() for p in mnist_digits(2)]}
    with live_server(tmp_path, "--workers", "2", "--metrics-dir", str(metrics_dir)) as server:
        answered: Counter[int] = Counter()
        for _ in range(requests):
            # A new client per request: a new TCP connection, accepted by either worker.
            with httpx.Client(base_url=server.url, timeout=10) as connection:
                response = connection.post("/v1/predict/batch", json=body)
                assert response.status_code == 200
                answered.update(item["digit"] for item in response.json()["predictions"])
        scrapes = []
        for _ in range(6):
            with httpx.Client(base_url=server.url, timeout=10) as connection:
                scrapes.append(parse_metrics(connection.get("/metrics").text))
        pids = worker_pids(metrics_dir)
        assert server.terminate() == 0
        log = server.log()

    # Only the workers load the model (the supervisor checks the files and binds the port).
    assert log.count('"message":"model loaded"') == 2, log[-3000:]

    assert "999999" not in pids, "the metrics folder must be cleaned at start"
    assert len(pids) == 2, f"one set of metric files per worker, got pids {pids}"
    for samples in scrapes:
        assert (
            value(
                samples,
                "mnist_http_requests_total",
                route="/v1/predict/batch",
                protocol="http",
                method="POST",
                status="200",
            )
            == requests
        )
        assert (
            value(
                samples,
                "mnist_http_request_duration_seconds_count",
                route="/v1/predict/batch",
                protocol="http",
            )
            == requests
        )
        assert total(samples, "mnist_predictions_total") == requests * images_per_request
        for digit, count in answered.items():
            assert (
                value(samples, "mnist_predictions_total", version=SERVED, digit=str(digit)) == count
            )
        assert value(samples, "mnist_queue_wait_seconds_count", version=SERVED) == requests
        assert value(samples, "mnist_http_requests_in_flight") == 0
        info = [labels for (name, labels) in samples if name == "mnist_model_info"]
        assert len(info) == 1, "model_info is one series, not one per worker"
