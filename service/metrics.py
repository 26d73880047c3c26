"""Every Prometheus metric of the service, in one place.

Histograms (not summaries) so percentiles can be aggregated across replicas;
base units in names; label values bounded (route templates, digits, reasons,
model versions). Every prediction metric carries the model `version` that
answered: each served version's batcher reports through its own
`VersionObserver`, so a rollout shows old and new side by side.
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
    """The metrics of one app instance; `observer(version)` gives each version's batcher
    its `batching.BatchObserver`."""

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
        self.http_waiting = Gauge(
            "http_requests_waiting",
            "Requests read and waiting in line for a free slot (MNIST_MAX_WAITING_REQUESTS).",
            multiprocess_mode="livesum",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.predictions = Counter(
            "predictions_total",
            "Images classified, by model version and predicted digit.",
            ["version", "digit"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.low_confidence = Counter(
            "low_confidence_predictions_total",
            "Images whose top probability was under the low-confidence threshold (drift signal).",
            ["version"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.inference_duration = Histogram(
            "inference_duration_seconds",
            "Duration of one onnxruntime call (one batch), by model version.",
            ["version"],
            buckets=INFERENCE_BUCKETS,
            namespace=NAMESPACE,
            registry=registry,
        )
        self.batch_size = Histogram(
            "batch_size_rows",
            "Image rows per onnxruntime call, by model version.",
            ["version"],
            buckets=batch_size_buckets(max_batch_size),
            namespace=NAMESPACE,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "queue_wait_seconds",
            "Time a request waited in its version's batch queue before its first row ran.",
            ["version"],
            buckets=LATENCY_BUCKETS,
            namespace=NAMESPACE,
            registry=registry,
        )
        # One number for the process (the overload signal), summed over the versions' queues.
        self.queue_depth_rows = Gauge(
            "queue_depth_rows",
            "Image rows waiting in the batch queues (all versions).",
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
            "A model version: 1 while served, 0 once unloaded; labelled with name, version, "
            "variant and file sha256.",
            ["name", "version", "variant", "sha256"],
            multiprocess_mode="max",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.version_served = Gauge(
            "model_version_served",
            "1 while this model version is served (by any live worker), 0 once taken out.",
            ["version"],
            multiprocess_mode="livemax",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.model_loads = Counter(
            "model_loads_total",
            "Attempts to load a model version, by version and outcome (loaded, failed).",
            ["version", "outcome"],
            namespace=NAMESPACE,
            registry=registry,
        )

        # Label children cached here: `.labels()` costs more than the increment itself.
        self._request_children: dict[tuple[str, str, int, str], Counter] = {}
        self._duration_children: dict[tuple[str, str], Histogram] = {}
        self._rejection_children: dict[str, Counter] = {}
        self._served_info: set[tuple[str, str, str, str]] = set()

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

    # -- model versions ----------------------------------------------------
    def observer(self, version: int) -> VersionObserver:
        """The `BatchObserver` for one version's batcher: its metrics carry that version."""
        return VersionObserver(self, str(version))

    def serving(self, models: list[tuple[str, int, str, str]]) -> None:
        """The served set changed: (name, version, variant, sha256) of every served version."""
        now = {(name, str(version), variant, sha) for name, version, variant, sha in models}
        for name, version, variant, sha in self._served_info - now:
            self.model_info.labels(name, version, variant, sha).set(0)
            if version not in {v for _, v, _, _ in now}:
                self.version_served.labels(version).set(0)
        for name, version, variant, sha in now:
            self.model_info.labels(name, version, variant, sha).set(1)
            self.version_served.labels(version).set(1)
        self._served_info = now

    def load_finished(self, version: int, *, loaded: bool) -> None:
        self.model_loads.labels(str(version), "loaded" if loaded else "failed").inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text: every worker's numbers merged in multiprocess mode."""
        if multiprocess_dir():
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class VersionObserver:
    """Implements `batching.BatchObserver` for the batcher of one model version."""

    def __init__(self, metrics: ServiceMetrics, version: str) -> None:
        self.threshold = metrics.low_confidence_threshold
        self.batch_size = metrics.batch_size.labels(version)
        self.inference_duration = metrics.inference_duration.labels(version)
        self.queue_wait = metrics.queue_wait.labels(version)
        self.low_confidence = metrics.low_confidence.labels(version)
        self.queue_depth_total = metrics.queue_depth_rows
        self._depth = 0  # this queue's share of the process-wide gauge
        # Every digit's series exists from the start, at 0: otherwise a digit's first
        # prediction creates its series at 1 and rate()/increase() never count that one.
        self.digits = [metrics.predictions.labels(version, str(d)) for d in range(10)]

    # Once per batch, on the event loop.
    def batch_done(self, probabilities: np.ndarray, seconds: float) -> None:
        self.batch_size.observe(len(probabilities))
        self.inference_duration.observe(seconds)
        digits = probabilities.argmax(axis=1)
        for digit, count in enumerate(np.bincount(digits, minlength=10).tolist()):
            if count:
                self.digits[digit].inc(count)
        confidences = probabilities.max(axis=1)
        low = int(np.count_nonzero(confidences < self.threshold))
        if low:
            self.low_confidence.inc(low)

    def queue_waited(self, seconds: float) -> None:
        self.queue_wait.observe(seconds)

    def queue_depth(self, rows: int) -> None:
        # Called on the event loop only (submit, expiry, delivery), so no lock is needed.
        self.queue_depth_total.inc(rows - self._depth)
        self._depth = rows
