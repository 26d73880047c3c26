"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.answers import JSONAnswer, error_response
from service.api.fast_routes import served_directly
from service.errors import ShuttingDown
from service.lifecycle import Lifecycle
from service.metrics import ServiceMetrics


def build_router(lifecycle: Lifecycle, metrics: ServiceMetrics) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness: the process answers")
    @served_directly
    async def healthz(request: Request) -> Response:
        """200 while the process runs; restart the container when this fails."""
        return JSONAnswer({"status": "ok"})

    @router.get(
        "/readyz",
        summary="Readiness: model loaded, warm, not shutting down",
        responses={503: {"description": "Not ready: loading or draining"}},
    )
    @served_directly
    async def readyz(request: Request) -> Response:
        """200 once the model is loaded and answered a warm-up inference; 503 before
        that and from the moment a shutdown starts, so traffic moves elsewhere first."""
        if lifecycle.ready:
            return JSONAnswer({"status": "ready"})
        why = "shutting down" if lifecycle.draining else "model not loaded yet"
        return error_response(ShuttingDown(f"not ready: {why}"))

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    async def scrape() -> Response:
        """All workers' metrics, in the Prometheus text exposition format."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return router
