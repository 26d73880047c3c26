"""The app factory: `create_app(settings)` builds a FastAPI app whose lifespan
loads the model, warms it up, starts the batcher, and on shutdown drains it.

Nothing happens at import time; `uvicorn --factory service.app:create_app` works.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import multiprocess

from service.api import health, rest, v2, web
from service.api.auth import ApiKeyCheck, ApiKeyGate
from service.api.errors import install_error_handlers
from service.api.middleware import RequestMiddleware
from service.api.parsing import Limits
from service.api.state import AppState
from service.batching import MicroBatcher, UnbatchedRunner
from service.config import Settings
from service.lifecycle import Lifecycle, install_drain_on_sigterm
from service.logs import configure_logging
from service.metrics import ServiceMetrics, multiprocess_dir
from service.model import OnnxModel, resolve_version_dir
from service.predictor import Predictor

log = logging.getLogger("service")

DESCRIPTION = """
Recognises handwritten digits. POST an image (photo, scan or drawing; any size,
colour or polarity) to `/v1/predict` and get the digit with its probabilities.
Requests are micro-batched into single onnxruntime calls.

Also speaks the Open Inference Protocol v2 (`/v2/...`, KServe/Triton clients),
exposes Prometheus metrics at `/metrics` and a draw-a-digit page at `/`.
Errors always answer `{"error": "..."}` with a 4xx/5xx status.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    lifecycle = Lifecycle()
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
    state = AppState(settings=settings, limits=limits, lifecycle=lifecycle, metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        version_dir = resolve_version_dir(
            settings.model_repository, settings.model_name, settings.model_version
        )
        model = OnnxModel(
            version_dir,
            variant=settings.model_variant,
            intra_op_threads=settings.ort_intra_op_threads,
            inter_op_threads=settings.ort_inter_op_threads,
        )
        model.warm_up(settings.max_batch_size)
        runner: MicroBatcher | UnbatchedRunner
        if settings.batching:
            runner = MicroBatcher(
                model.predict,
                max_batch_size=settings.max_batch_size,
                max_queue_delay_s=settings.max_queue_delay_ms / 1000,
                max_queue_rows=settings.max_queue_size,
                observer=metrics,
            )
        else:
            runner = UnbatchedRunner(
                model.predict, max_queue_rows=settings.max_queue_size, observer=metrics
            )
        await runner.start()
        info = model.info
        state.model = info
        state.model_ref = {"name": info.name, "version": info.version}
        state.predictor = Predictor(runner, info, metrics, timeout_s=settings.request_timeout_s)
        metrics.set_model(info.name, info.version, info.variant, info.sha256)
        install_drain_on_sigterm(
            lifecycle, drain_delay_s=settings.drain_delay_s, grace_s=settings.shutdown_grace_s
        )
        lifecycle.ready = True
        log.info(
            "ready",
            extra={
                "model": info.name,
                "version": info.version,
                "variant": info.variant,
                "file": str(info.path),
                "load_seconds": round(info.load_seconds, 3),
                "batching": settings.batching,
            },
        )
        try:
            yield
        finally:
            lifecycle.begin_drain()
            await runner.stop()
            if multiprocess_dir():
                multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
            log.info("stopped")

    app = FastAPI(
        title="mnist-serve",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = state
    install_error_handlers(app, metrics)
    app.include_router(web.router)
    app.include_router(rest.build_router())
    app.include_router(v2.build_router())
    app.include_router(health.build_router())
    # Middleware added last runs first: RequestMiddleware (ids, metrics, limits), then the key gate.
    app.add_middleware(
        ApiKeyGate,
        check=ApiKeyCheck(settings.load_api_keys()),
        metrics=metrics,
        metrics_protected=settings.metrics_require_key,
    )
    app.add_middleware(
        RequestMiddleware,
        metrics=metrics,
        lifecycle=lifecycle,
        max_body_bytes=settings.max_upload_bytes,
        body_timeout_s=settings.body_timeout_s,
        max_concurrent=settings.max_concurrent_requests,
        log_requests=settings.access_log,
    )
    return app


def create_app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes: settings come from MNIST_* variables."""
    settings = Settings()
    configure_logging(settings.log_level)  # each worker process logs JSON too
    return create_app(settings)
