"""The draw-a-digit page at `/`: a person draws or drops an image and sees the answer."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from starlette.responses import HTMLResponse, Response

router = APIRouter(tags=["web page"])


@router.get("/", response_class=HTMLResponse, summary="Draw a digit and see the prediction")
async def index() -> Response:
    """A small page: draw with mouse or finger, or drop an image file; it calls /v1/predict."""
    page = resources.files("service").joinpath("static/index.html").read_text(encoding="utf-8")
    return HTMLResponse(page)
