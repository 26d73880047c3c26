"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.responses import FastJSONResponse, error_response
from service.api.state import AppState


def build_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> Response:
        """200 while the process runs; restart the container when this fails."""
        return FastJSONResponse({"status": "ok"})

    @router.get(
        "/readyz",
        summary="Readiness: model loaded, warm, not shutting down",
        responses={503: {"description": "Not ready: loading or draining"}},
    )
    async def readyz(request: Request) -> Response:
        """200 once the model is loaded and answered a warm-up inference; 503 before
        that and from the moment a shutdown starts, so traffic moves elsewhere first."""
        lifecycle = AppState.of(request).lifecycle
        if lifecycle.ready:
            return FastJSONResponse({"status": "ready"})
        why = "shutting down" if lifecycle.draining else "model not loaded yet"
        return error_response(503, f"not ready: {why}")

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    async def metrics(request: Request) -> Response:
        """All workers' metrics, in the Prometheus text exposition format."""
        body, content_type = AppState.of(request).metrics.render()
        return Response(body, media_type=content_type)

    return router
