"""How FastAPI-served routes turn exceptions into answers (the hot routes do the same
in `service.api.fast_routes`). Each `ServiceError` carries its status; anything
else that escapes a route is a bug: logged with its traceback, answered 500
without internals. Every answer is built by `service.api.answers`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from service.api.answers import error_response
from service.errors import BadRequest, InvalidInput, NotFound, ServiceError
from service.metrics import ServiceMetrics

log = logging.getLogger("service.errors")


class MethodNotAllowed(ServiceError):
    status_code = 405
    reason = "method_not_allowed"


def describe_validation_error(error: RequestValidationError) -> str:
    problems = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        problems.append(f"{where or 'body'}: {item.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(problems)


def install_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    def answer(error: ServiceError) -> Response:
        metrics.rejected(error.reason)
        if error.status_code >= 500:
            log.warning("request failed", extra={"reason": error.reason, "error": error.message})
        return error_response(error)

    async def on_service_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ServiceError)
        return answer(error)

    async def on_validation_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        message = describe_validation_error(error)
        # The Open Inference Protocol answers malformed requests with 400.
        if request.url.path.startswith("/v2/"):
            return answer(BadRequest(message))
        return answer(InvalidInput(message))

    async def on_http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if error.status_code == 404:
            return answer(
                NotFound(f"no such endpoint: {request.method} {request.url.path}; see /docs")
            )
        if error.status_code == 405:
            return answer(
                MethodNotAllowed(
                    f"{request.method} is not allowed on {request.url.path}; see /docs"
                )
            )
        message = error.detail if isinstance(error.detail, str) else str(error.detail)
        failure = ServiceError(message, headers=dict(error.headers or {}))
        failure.status_code = error.status_code
        return answer(failure)

    async def on_unexpected(request: Request, error: Exception) -> Response:
        log.exception("unhandled error", exc_info=error)
        return answer(ServiceError("internal error; it has been logged"))

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
