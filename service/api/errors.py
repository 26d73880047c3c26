"""The one place where exceptions become HTTP answers.

Each `ServiceError` carries its status; everything else that escapes a route
is a bug: logged with its traceback, answered 500 without internals.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from service.api.responses import error_response
from service.errors import ServiceError
from service.metrics import ServiceMetrics

log = logging.getLogger("service.errors")


def describe_validation_error(error: RequestValidationError) -> str:
    problems = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        problems.append(f"{where or 'body'}: {item.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(problems)


def install_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    async def on_service_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ServiceError)
        metrics.rejections.labels(reason=error.reason).inc()
        if error.status_code >= 500:
            log.warning("request failed", extra={"reason": error.reason, "error": error.message})
        return error_response(error.status_code, error.message, error.headers)

    async def on_validation_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        metrics.rejections.labels(reason="invalid_input").inc()
        # The Open Inference Protocol answers malformed requests with 400.
        status = 400 if request.url.path.startswith("/v2/") else 422
        return error_response(status, describe_validation_error(error))

    async def on_http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if isinstance(error.__cause__, ServiceError):
            # FastAPI wraps errors raised while it reads a declared body (our 413/408
            # from the size and time limits) as a 400 "error parsing the body".
            return await on_service_error(request, error.__cause__)
        message = error.detail if isinstance(error.detail, str) else str(error.detail)
        if error.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}; see /docs"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs"
        return error_response(error.status_code, message, dict(error.headers or {}))

    async def on_unexpected(request: Request, error: Exception) -> Response:
        log.exception("unhandled error", exc_info=error)
        metrics.rejections.labels(reason="internal").inc()
        return error_response(500, "internal error; it has been logged")

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
