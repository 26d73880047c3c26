"""`grpc.health.v1.Health/Check`, answered from the live `Lifecycle` (Kubernetes gRPC probes).

Service "" and "inference.GRPCInferenceService" are SERVING while the process
is ready (model loaded and warm, not draining), NOT_SERVING otherwise: the
readiness probe. "liveness" is SERVING while the process answers at all.
Any other name is NOT_FOUND, as the health protocol asks.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.lifecycle import Lifecycle

READINESS = frozenset({"", "inference.GRPCInferenceService"})
LIVENESS = "liveness"
Status = health_pb2.HealthCheckResponse


class LifecycleHealth(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    async def Check(  # noqa: N802 - the protocol's method name
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.aio.ServicerContext,
    ) -> health_pb2.HealthCheckResponse:
        if request.service == LIVENESS:
            return Status(status=Status.SERVING)
        if request.service not in READINESS:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        serving = self.lifecycle.ready and not self.lifecycle.draining
        return Status(status=Status.SERVING if serving else Status.NOT_SERVING)
