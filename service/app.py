"""The app factory: `create_app(settings)` builds the ASGI app; its lifespan loads
the model versions the policy picks (checked, warmed up, one batcher each, by
`service.model_control`), and on shutdown drains them.

A request passes, in order: `Observation` (request id, metrics, access log),
`Admission` (draining, API key, in-flight limit, declared size), then either
`FastRoutes` (the hot endpoints, called directly) or FastAPI's router (every
other endpoint). Endpoints parse, call a `Predictor`, and answer.

Nothing happens at import time.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.routing import APIRoute
from prometheus_client import multiprocess
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api import health, repository, rest, v2, web
from service.api.admission import Admission
from service.api.auth import ApiKeyCheck
from service.api.docs import install_docs
from service.api.errors import install_error_handlers
from service.api.fast_routes import FastRoutes, is_served_directly
from service.api.observation import Observation
from service.api.parsing import Limits
from service.config import Settings
from service.grpc.server import start_grpc, stop_grpc
from service.grpc.servicer import Calls, InferenceServicer
from service.lifecycle import Lifecycle
from service.logs import AccessLog
from service.metrics import ServiceMetrics, multiprocess_dir
from service.model_control import ModelControl
from service.registry import ModelRegistry
from service.uncertainty import UncertaintyPolicy
from service.worker_sync import WorkerSync

YOUNG_COLLECTION_THRESHOLD = 7_000
log = logging.getLogger("service")
GRPC_STOP_GRACE_S = 5.0


def settle_the_collector() -> None:
    """Tune the garbage collector for serving, once everything long-lived is built."""
    # Everything built so far (FastAPI, pydantic, the model) lives as long as the
    # process: moved out of the collector's sight, full collections stay short
    # instead of walking it and stalling requests (measured: lower p99).
    gc.collect()
    gc.freeze()
    # Young collections every 7,000 net allocations, not Python's 700: each costs
    # about a microsecond per young object, and a request in flight keeps dozens
    # alive, so the default collected every few requests. Measured (collector
    # CPU per request, gc.callbacks): 23 -> 9 µs at 32 connections, 58 -> 22 at
    # 1,024, 87 -> 18 at 4,000. The price: a lone client's p99 rises by ~1 ms
    # (2.3 -> 3.4 ms, one collection now takes longer; 2,000 keeps it at 2.4 ms).
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


DESCRIPTION = """
Recognises handwritten digits. POST an image (photo, scan or drawing; any size,
colour or polarity) to `/v1/predict` and get the digit with its probabilities,
and whether the answer is `uncertain`. POST the same image to `/v1/preprocess`
to see the 28x28 picture the model actually received.
Requests are micro-batched into single onnxruntime calls.

Also speaks the Open Inference Protocol v2 (`/v2/...`, KServe/Triton clients;
over gRPC too, on `--grpc-port`),
exposes Prometheus metrics at `/metrics` and a draw-a-digit page at `/`.
Errors always answer `{"error": "..."}` with a 4xx/5xx status.
"""


class ServiceApp:
    """The ASGI app the server runs: three small layers in front of FastAPI.

    `Observation` -> `Admission` -> `FastRoutes` -> FastAPI. The hot endpoints
    never enter FastAPI's own middleware stack (error pages, telemetry, body
    limits, exit stacks), which would cost more than the prediction itself;
    FastAPI still serves and documents everything else, and runs the lifespan.
    """

    def __init__(self, fastapi: FastAPI, chain: ASGIApp, metrics: ServiceMetrics) -> None:
        self.fastapi = fastapi
        self.chain = chain
        self.metrics = metrics  # also counted by the HTTP protocol's own refusals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if len(path) > 1 and path[-1] == "/":
            # `/v1/predict/` means `/v1/predict`: serve it rather than answer a bare redirect.
            scope["path"] = path.rstrip("/") or "/"
        await self.chain(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document FastAPI builds for every endpoint (served at /openapi.json)."""
        return self.fastapi.openapi()


def create_app(
    settings: Settings | None = None, *, lifecycle: Lifecycle | None = None
) -> ServiceApp:
    settings = settings or Settings()
    lifecycle = lifecycle or Lifecycle()
    metrics = ServiceMetrics(
        max_batch_size=settings.max_batch_size,
        low_confidence_threshold=settings.low_confidence_threshold,
    )
    limits = Limits(
        max_upload_bytes=settings.max_upload_bytes,
        max_image_pixels=settings.max_image_pixels,
        max_batch_items=settings.max_batch_items,
        max_json_depth=settings.max_json_depth,
    )
    registry = ModelRegistry(settings.model_name)
    keys = ApiKeyCheck(settings.load_api_keys())
    access_log = AccessLog() if settings.access_log else None
    sync = WorkerSync(settings.repository_state_dir) if settings.repository_state_dir else None
    control = ModelControl(settings, registry, metrics, lifecycle, sync)
    # The inference protocol over gRPC, on this worker's loop, feeding the same batchers.
    servicer = InferenceServicer(
        registry=registry,
        limits=limits,
        lifecycle=lifecycle,
        calls=Calls(
            lifecycle=lifecycle,
            metrics=metrics,
            keys=keys,
            access_log=access_log,
            # No line on gRPC: its calls run at once, up to all the HTTP side holds.
            max_concurrent=settings.max_concurrent_requests + settings.max_waiting_requests,
        ),
        server=v2.server_info(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Large uploads are decoded in worker threads: no more of them than cores this
        # process may use (anyio's default, 40, only adds memory and contention).
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(1, len(os.sched_getaffinity(0)))
        await control.start()
        grpc_server = await start_grpc(settings, servicer, lifecycle)
        settle_the_collector()
        # False if another worker had unloaded the model, or a signal came during the start.
        lifecycle.ready = registry.ready and not lifecycle.draining
        log.info("ready")
        try:
            yield
        finally:
            lifecycle.begin_drain()
            # Counted gRPC calls were already waited for by the drain; the grace covers
            # a lifespan ended without one (tests, a second signal).
            await stop_grpc(grpc_server, GRPC_STOP_GRACE_S)
            await control.stop()
            if multiprocess_dir():
                multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
            log.info("stopped")

    app = FastAPI(
        title="mnist-serve",
        version=v2.server_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from installed assets instead of a CDN: service.api.docs
        redoc_url=None,
        redirect_slashes=False,  # trailing slashes are stripped in ServiceApp instead
    )
    install_error_handlers(app, metrics)
    install_docs(app)
    uncertainty = UncertaintyPolicy(settings.uncertain_below, settings.uncertain_margin)
    routers = [
        web.router,
        rest.build_router(registry, limits, lifecycle, uncertainty),
        v2.build_router(registry, limits, lifecycle),
        health.build_router(lifecycle, metrics),
    ]
    if settings.repository_api_enabled():
        routers.append(repository.build_router(control))
        if not settings.load_api_keys():
            log.warning(
                "the repository API is on without API keys: "
                "anyone who reaches the port can change the served model"
            )
    for router in routers:
        app.include_router(router)
    hot = [route for router in routers for route in router.routes if is_served_directly(route)]
    assert all(isinstance(route, APIRoute) for route in hot)
    chain = Observation(
        Admission(
            FastRoutes(app, routes=hot, metrics=metrics),
            lifecycle=lifecycle,
            metrics=metrics,
            keys=keys,
            metrics_protected=settings.metrics_require_key,
            max_body_bytes=settings.max_upload_bytes,
            max_concurrent=settings.max_concurrent_requests,
        ),
        metrics=metrics,
        access_log=access_log,
    )
    return ServiceApp(app, chain, metrics)
