"""Every Prometheus metric of the service, in one place.

Histograms (not summaries) so percentiles can be aggregated across replicas;
base units in names; label values bounded (route templates, digits, reasons).
With several worker processes, prometheus-client's multiprocess mode is used
(`PROMETHEUS_MULTIPROC_DIR`, set by `mnist-serve --workers N`) and `/metrics`
merges every worker's numbers instead of showing one random worker's view.
"""

from __future__ import annotations

import os

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

NAMESPACE = "mnist"
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
INFERENCE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5,
)  # fmt: skip


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def batch_size_buckets(max_batch_size: int) -> list[float]:
    """Powers of two up to the configured maximum, so the full-batch bucket exists."""
    buckets, size = [], 1
    while size < max_batch_size:
        buckets.append(float(size))
        size *= 2
    buckets.append(float(max_batch_size))
    return buckets


class ServiceMetrics:
    """The metrics of one app instance; implements `batching.BatchObserver`."""

    def __init__(self, *, max_batch_size: int, low_confidence_threshold: float) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.low_confidence_threshold = low_confidence_threshold
        registry = self.registry

        self.http_requests = Counter(
            "http_requests_total",
            "Requests answered, by route template, method, status code and protocol (http, grpc; "
            "a gRPC call's status is the HTTP status of its outcome, its route /<service>/<rpc>).",
            ["route", "method", "status", "protocol"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "Time from request start to response end, by route template and protocol.",
            ["route", "protocol"],
            buckets=LATENCY_BUCKETS,
            namespace=NAMESPACE,
            registry=registry,
        )
        self.http_in_flight = Gauge(
            "http_requests_in_flight",
            "Requests being handled right now.",
            multiprocess_mode="livesum",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.predictions = Counter(
            "predictions_total",
            "Images classified, by predicted digit.",
            ["digit"],
            namespace=NAMESPACE,
            registry=registry,
        )
        # Every digit's series exists from the start, at 0: otherwise a digit's first
        # prediction creates its series at 1 and rate()/increase() never count that one.
        for digit in range(10):
            self.predictions.labels(digit=str(digit))
        self.low_confidence = Counter(
            "low_confidence_predictions_total",
            "Images whose top probability was under the low-confidence threshold (drift signal).",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.inference_duration = Histogram(
            "inference_duration_seconds",
            "Duration of one onnxruntime call (one batch).",
            buckets=INFERENCE_BUCKETS,
            namespace=NAMESPACE,
            registry=registry,
        )
        self.batch_size = Histogram(
            "batch_size_rows",
            "Image rows per onnxruntime call.",
            buckets=batch_size_buckets(max_batch_size),
            namespace=NAMESPACE,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "queue_wait_seconds",
            "Time a request waited in the batch queue before its first row ran.",
            buckets=LATENCY_BUCKETS,
            namespace=NAMESPACE,
            registry=registry,
        )
        self.queue_depth_rows = Gauge(
            "queue_depth_rows",
            "Image rows waiting in the batch queue.",
            multiprocess_mode="livesum",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.rejections = Counter(
            "rejections_total",
            "Requests refused, by reason (queue_full, timeout, invalid_input, too_large, ...).",
            ["reason"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.model_info = Gauge(
            "model_info",
            "The served model: always 1, labelled with name, version, variant and file sha256.",
            ["name", "version", "variant", "sha256"],
            multiprocess_mode="max",
            namespace=NAMESPACE,
            registry=registry,
        )

        # Label children cached here: `.labels()` costs more than the increment itself.
        self._request_children: dict[tuple[str, str, int, str], Counter] = {}
        self._duration_children: dict[tuple[str, str], Histogram] = {}
        self._rejection_children: dict[str, Counter] = {}
        self._digit_children = [self.predictions.labels(digit=str(d)) for d in range(10)]

    # -- per request (the hot path: constant, small work) ------------------
    def request_done(
        self, route: str, method: str, status: int, seconds: float, protocol: str = "http"
    ) -> None:
        key = (route, method, status, protocol)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.http_requests.labels(
                route, method, str(status), protocol
            )
        counter.inc()
        histogram = self._duration_children.get((route, protocol))
        if histogram is None:
            histogram = self._duration_children[(route, protocol)] = self.http_duration.labels(
                route, protocol
            )
        histogram.observe(seconds)

    def rejected(self, reason: str) -> None:
        counter = self._rejection_children.get(reason)
        if counter is None:
            counter = self._rejection_children[reason] = self.rejections.labels(reason=reason)
        counter.inc()

    # -- BatchObserver: once per batch ---------------------------------------
    def batch_done(self, probabilities: np.ndarray, seconds: float) -> None:
        self.batch_size.observe(len(probabilities))
        self.inference_duration.observe(seconds)
        digits = probabilities.argmax(axis=1)
        for digit, count in enumerate(np.bincount(digits, minlength=10).tolist()):
            if count:
                self._digit_children[digit].inc(count)
        confidences = probabilities.max(axis=1)
        low = int(np.count_nonzero(confidences < self.low_confidence_threshold))
        if low:
            self.low_confidence.inc(low)

    def queue_waited(self, seconds: float) -> None:
        self.queue_wait.observe(seconds)

    def queue_depth(self, rows: int) -> None:
        self.queue_depth_rows.set(rows)

    # -- service events ----------------------------------------------------
    def set_model(self, name: str, version: int, variant: str, sha256: str) -> None:
        self.model_info.labels(name=name, version=str(version), variant=variant, sha256=sha256).set(
            1
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text: every worker's numbers merged in multiprocess mode."""
        if multiprocess_dir():
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
