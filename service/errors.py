"""The typed errors of the service, each with the HTTP status it maps to.

Raised anywhere (preprocessing, batcher, model loading) and turned into an HTTP
answer in exactly one place (`service.api.errors`). Nothing here knows HTTP
beyond the status number, so the batcher and preprocessing stay web-agnostic.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: `status_code` is the HTTP status, `str(error)` the message for a person."""

    status_code: int = 500
    reason: str = "internal"  # label value for the rejections metric

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ServiceError):
    """The request is malformed for its protocol (e.g. an Open Inference Protocol tensor)."""

    status_code = 400
    reason = "bad_request"


class InvalidInput(ServiceError):
    """The request was understood but its content cannot be used (bad pixels, bad base64...)."""

    status_code = 422
    reason = "invalid_input"


class InvalidImage(InvalidInput):
    """The bytes are not a usable image: corrupt, truncated, blank, unsupported format."""

    reason = "invalid_image"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    reason = "unsupported_media_type"


class PayloadTooLarge(ServiceError):
    """Body, image dimensions (decompression bomb) or item count over a configured limit."""

    status_code = 413
    reason = "too_large"


class NotFound(ServiceError):
    status_code = 404
    reason = "not_found"


class Unauthorized(ServiceError):
    status_code = 401
    reason = "unauthorized"

    def __init__(
        self,
        message: str = "missing or invalid API key: send 'Authorization: Bearer <key>' "
        "or 'X-API-Key: <key>'",
    ) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class RequestTimeout(ServiceError):
    """The client did not send its body in time (slow or stalled upload)."""

    status_code = 408
    reason = "body_timeout"


class ClientDisconnected(ServiceError):
    """The client left before its answer was ready; nobody reads this response."""

    status_code = 499  # nginx's "client closed request"
    reason = "client_disconnected"


class Overloaded(ServiceError):
    """The bounded queue is full: the client should retry after `Retry-After` seconds."""

    status_code = 429
    reason = "queue_full"

    def __init__(self, message: str | None = None, *, waiting_rows: int | None = None) -> None:
        if message is None:
            waiting = "" if waiting_rows is None else f" ({waiting_rows} images waiting)"
            message = f"the queue is full{waiting}; retry in a second"
        super().__init__(message, headers={"Retry-After": "1"})


class TooManyRequests(Overloaded):
    """More requests in flight than `max_concurrent_requests`: refused before the body is read."""

    reason = "too_many_requests"

    def __init__(self) -> None:
        super().__init__("too many requests in flight; retry in a second")


class ShuttingDown(ServiceError):
    """The process is draining after SIGTERM: new work goes to another replica."""

    status_code = 503
    reason = "shutting_down"

    def __init__(
        self, message: str = "the service is shutting down; retry on another replica"
    ) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class DeadlineExceeded(ServiceError):
    status_code = 504
    reason = "timeout"


class InferenceFailed(ServiceError):
    """onnxruntime raised while running a batch; every request of that batch gets this."""

    status_code = 500
    reason = "inference_error"


class LoadFailed(ServiceError):
    """A repository-API load found nothing to serve or a version that failed its checks;
    the served versions are unchanged (Triton answers a failed load with 400 too)."""

    status_code = 400
    reason = "load_failed"


class WorkersDiverged(ServiceError):
    """The worker that took a load/unload applied it, but another did not confirm in time."""

    status_code = 500
    reason = "workers_diverged"


class ModelLoadError(Exception):
    """The model file is missing, corrupt or does not match its card. Fails startup."""
