"""`inference.GRPCInferenceService`: the inference protocol's six calls over gRPC.

Each call goes through `Calls.run`, gRPC's counterpart of the HTTP layers
`Observation` and `Admission`: a request id (from `x-request-id` metadata or
made), the API key from call metadata when keys are set, draining and the
in-flight limit (refused before any work, counted in the same `Lifecycle` so
a drain waits for in-flight calls), metrics with protocol="grpc", one access
log line, and the typed `ServiceError` mapped once to a gRPC status.
`ModelInfer` then does what the HTTP route does: resolve the model version,
check queue room, turn the message into pixel rows, and `Predictor.predict`
within the call's own deadline, so gRPC and HTTP rows share batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from service.api.auth import ApiKeyCheck, presented_key
from service.api.observation import RequestIds
from service.api.parsing import Limits
from service.api.tensors import input_rows
from service.errors import (
    ClientDisconnected,
    DeadlineExceeded,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    ShuttingDown,
    TooManyRequests,
    Unauthorized,
)
from service.grpc.codec import infer_response, inference_request, model_metadata
from service.grpc.methods import SERVICE
from service.grpc.protocol import grpc_predict_v2_pb2 as pb
from service.lifecycle import Lifecycle
from service.logs import AccessLog
from service.metrics import ServiceMetrics
from service.registry import ModelRegistry

log = logging.getLogger("service.grpc")
Reply = TypeVar("Reply")
GRPC = "grpc"


def grpc_status(error: ServiceError) -> grpc.StatusCode:
    """The gRPC status of a typed error (its HTTP status is kept for the metrics)."""
    if isinstance(error, Unauthorized):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(error, NotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(error, Overloaded):  # queue full, too many in flight
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(error, ShuttingDown):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(error, DeadlineExceeded | RequestTimeout):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(error, ClientDisconnected):
        return grpc.StatusCode.CANCELLED
    if isinstance(error, PayloadTooLarge):
        # More images than a request may hold: retrying the same call cannot help.
        return grpc.StatusCode.INVALID_ARGUMENT
    if 400 <= error.status_code < 500:
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


class Calls:
    """What every call shares: identity, admission, accounting, errors."""

    def __init__(
        self,
        *,
        lifecycle: Lifecycle,
        metrics: ServiceMetrics,
        keys: ApiKeyCheck,
        access_log: AccessLog | None,
        max_concurrent: int,
    ) -> None:
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.keys = keys
        self.access_log = access_log
        self.max_concurrent = max_concurrent
        self.ids = RequestIds()

    def _admit(self, metadata: list[tuple[bytes, bytes]], *, keyed: bool, work: bool) -> None:
        if keyed and self.keys.enabled and not self.keys.is_valid(presented_key(metadata)):
            raise Unauthorized(
                "missing or invalid API key: send metadata 'authorization: Bearer <key>' "
                "or 'x-api-key: <key>'"
            )
        if not work:
            return
        if self.lifecycle.draining:
            raise ShuttingDown()
        if self.lifecycle.accepted >= self.max_concurrent:
            raise TooManyRequests()

    async def run(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        handle: Callable[[], Awaitable[Reply]],
        *,
        keyed: bool = True,
        work: bool = True,
    ) -> Reply:
        """Run one call: `keyed` calls need an API key, `work` calls are refused while
        draining or over the in-flight limit, and counted until answered."""
        started = time.perf_counter()
        metadata = [
            (key.lower().encode(), value.encode() if isinstance(value, str) else value)
            for key, value in (context.invocation_metadata() or ())
        ]
        given = dict(metadata).get(b"x-request-id", b"")
        request_id = given.decode("latin-1") if 0 < len(given) <= 128 else self.ids.next().decode()
        await context.send_initial_metadata((("x-request-id", request_id),))
        status, code, message = 200, grpc.StatusCode.OK, ""
        counted = shed = False
        try:
            self._admit(metadata, keyed=keyed, work=work)
            if work:
                self.lifecycle.request_started()
                counted = True
            return await handle()
        except ServiceError as error:
            status, code, message = error.status_code, grpc_status(error), error.message
            # Load shed before any work gets no log line, as over HTTP: under overload a
            # line per refusal would cost more than the refusal.
            shed = isinstance(error, ShuttingDown | TooManyRequests)
            self.metrics.rejected(error.reason)
        except asyncio.CancelledError:
            # grpc cancelled the call: its deadline passed (504) or the client left (499).
            remaining = context.time_remaining()
            timed_out = remaining is not None and remaining <= 0
            status = 504 if timed_out else 499
            self.metrics.rejected("timeout" if timed_out else "client_disconnected")
            raise
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id, "method": method})
            status, code = 500, grpc.StatusCode.INTERNAL
            message = "internal error; it has been logged"
            self.metrics.rejected("internal")
        finally:
            if counted:
                self.lifecycle.request_finished()
            seconds = time.perf_counter() - started
            if work:  # like HTTP probes, health and metadata calls are not traffic
                route = f"/{SERVICE}/{method}"
                self.metrics.request_done(route, "POST", status, seconds, protocol=GRPC)
                if self.access_log is not None and not shed:
                    peer = context.peer() or "-"
                    self.access_log.record(
                        request_id, "POST", route, status, seconds, peer, protocol=GRPC
                    )
        await context.abort(code, message)
        raise AssertionError("unreachable: abort raises")


class InferenceServicer:
    def __init__(
        self,
        *,
        registry: ModelRegistry,
        limits: Limits,
        lifecycle: Lifecycle,
        calls: Calls,
        server: dict[str, object],
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.lifecycle = lifecycle
        self.calls = calls
        self.server = server

    async def ServerLive(  # noqa: N802 - the protocol's method names
        self,
        request: pb.ServerLiveRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.ServerLiveResponse:
        async def handle() -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)

        return await self.calls.run("ServerLive", context, handle, keyed=False, work=False)

    async def ServerReady(  # noqa: N802
        self,
        request: pb.ServerReadyRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.ServerReadyResponse:
        async def handle() -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=self.lifecycle.ready)

        return await self.calls.run("ServerReady", context, handle, keyed=False, work=False)

    async def ModelReady(  # noqa: N802
        self,
        request: pb.ModelReadyRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.ModelReadyResponse:
        async def handle() -> pb.ModelReadyResponse:
            self.registry.resolve(request.name, request.version or None)
            return pb.ModelReadyResponse(ready=self.lifecycle.ready)

        return await self.calls.run("ModelReady", context, handle, keyed=False, work=False)

    async def ServerMetadata(  # noqa: N802
        self,
        request: pb.ServerMetadataRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.ServerMetadataResponse:
        async def handle() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(
                name=str(self.server["name"]),
                version=str(self.server["version"]),
                extensions=[],  # binary_tensor_data is HTTP's; gRPC is binary already
            )

        return await self.calls.run("ServerMetadata", context, handle, keyed=False, work=False)

    async def ModelMetadata(  # noqa: N802
        self,
        request: pb.ModelMetadataRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.ModelMetadataResponse:
        async def handle() -> pb.ModelMetadataResponse:
            predictor = self.registry.resolve(request.name, request.version or None)
            versions = [str(p.model.version) for p in self.registry.served()]
            return model_metadata(predictor.model.card, self.registry.name, versions)

        return await self.calls.run("ModelMetadata", context, handle, work=False)

    async def ModelInfer(  # noqa: N802
        self,
        request: pb.ModelInferRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.ModelInferResponse:
        async def handle() -> pb.ModelInferResponse:
            predictor = self.registry.resolve(request.model_name, request.model_version or None)
            predictor.check_capacity()
            inference = inference_request(request)
            rows = await input_rows(inference.input, self.limits)
            remaining = context.time_remaining()
            deadlines = [t for t in (remaining, inference.timeout_s) if t is not None]
            # A call the client cancels (or whose deadline passes) is cancelled by grpc:
            # the batcher then frees its queued rows, so no `abandoned` poll is needed.
            result = await predictor.predict(rows, timeout_s=min(deadlines, default=None))
            version = str(predictor.model.version)
            return infer_response(inference, result, self.registry.name, version)

        return await self.calls.run("ModelInfer", context, handle)
