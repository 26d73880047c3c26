"""The API documentation pages, `/docs` (Swagger UI) and `/redoc`, served offline.

FastAPI's default pages load Swagger UI and ReDoc from a public CDN, so on a
machine without internet access they are blank. These routes are FastAPI's
documented self-hosting recipe: the app is built with `docs_url=None,
redoc_url=None`, and the same HTML pages point at script and style files served
from this process. The files come from the `fastapi-offline` package (Swagger
UI 5, ReDoc 2): Swagger UI 4 cannot render the OpenAPI 3.1 document FastAPI
emits, so the bundled major version is checked by the tests.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS_PACKAGE = ("fastapi_offline", "static")
ASSETS_PATH = "/docs-assets"
DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
# The pages may load images, fonts and data from this origin only: ReDoc would
# otherwise fetch its vendor's logo from the internet (it hides it when refused).
OFFLINE_POLICY = "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'"
SWAGGER_PARAMETERS = {
    # The validator badge would fetch an image from a public validator service.
    "validatorUrl": None,
    "deepLinking": True,
    "tryItOutEnabled": True,
}


def install_docs(app: FastAPI) -> None:
    """Serve /docs, /redoc and their assets from this process (no CDN, works offline)."""
    app.mount(ASSETS_PATH, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} · API documentation",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_PATH,
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        )
        page.headers["Content-Security-Policy"] = OFFLINE_POLICY
        return page

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} · API reference",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = OFFLINE_POLICY
        return page
