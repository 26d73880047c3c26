"""The draw-a-digit page at `/`: a person draws or drops an image and sees the answer.

The page is one self-contained file (inline CSS and JS, no CDN: it must work
offline). It is served with a strict Content-Security-Policy that allows only
its own inline script and style, by their sha256 hashes, so nothing injected
into it could run, and it may only talk to this origin.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from fastapi import APIRouter, Request
from starlette.responses import Response

router = APIRouter(tags=["web page"])

_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True)
class Page:
    body: bytes
    headers: dict[str, str]


def _sha256_source(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def content_security_policy(html: str) -> str:
    """A CSP that allows exactly the inline <script> and <style> blocks of `html`."""
    sources: dict[str, list[str]] = {"script": [], "style": []}
    for tag, content in _INLINE.findall(html):
        sources[tag].append(_sha256_source(content))
    scripts = " ".join(sources["script"]) or "'none'"
    styles = " ".join(sources["style"]) or "'none'"
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {scripts}",
            f"style-src {styles}",
            "img-src 'self' data: blob:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


@cache
def load_page() -> Page:
    """Read the page once per process (on first request, not at import)."""
    html = resources.files("service").joinpath("static/index.html").read_text(encoding="utf-8")
    body = html.encode("utf-8")
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {
        "Content-Security-Policy": content_security_policy(html),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
        "ETag": etag,
    }
    return Page(body, headers)


@router.get(
    "/",
    summary="Draw a digit and see the prediction",
    response_class=Response,
    responses={200: {"content": {"text/html": {}}, "description": "The web page"}},
)
async def index(request: Request) -> Response:
    """A small page: draw with mouse or finger, or drop an image file; it calls /v1/predict
    and /v1/preprocess and shows the digit, its confidence, the ten probabilities, the
    28x28 image the model saw and, when the answer is uncertain, the two likeliest digits."""
    page = load_page()
    if request.headers.get("if-none-match") == page.headers["ETag"]:
        return Response(status_code=304, headers=page.headers)
    return Response(page.body, media_type="text/html; charset=utf-8", headers=page.headers)
