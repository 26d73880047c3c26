"""The hot endpoints, served without FastAPI's routing and dependency machinery.

FastAPI declares every endpoint (so /docs documents them all) and serves most of
them. For the few that carry the traffic (predictions, inference, probes) that
machinery would cost more than the rest of the request, so this pure ASGI
layer matches their paths itself and calls the very same endpoint functions
(`endpoint(request, **path_params)`), with the same route object in the scope
for metrics. A typed `ServiceError` raised by an endpoint becomes its answer
here, exactly as FastAPI's exception handler would answer it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeGuard, TypeVar

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.answers import send_error
from service.errors import ServiceError
from service.metrics import ServiceMetrics

log = logging.getLogger("service.errors")
Endpoint = TypeVar("Endpoint", bound=Callable[..., Awaitable[Response]])
_FAST = "__served_directly__"


def served_directly(endpoint: Endpoint) -> Endpoint:
    """Mark an endpoint as hot: `FastRoutes` serves it; FastAPI still documents it."""
    setattr(endpoint, _FAST, True)
    return endpoint


def is_served_directly(route: object) -> TypeGuard[APIRoute]:
    return isinstance(route, APIRoute) and getattr(route.endpoint, _FAST, False)


class _Pattern:
    """A route path split into segments; `{name}` segments capture a path parameter."""

    def __init__(self, route: APIRoute) -> None:
        self.route = route
        self.segments = route.path.strip("/").split("/")
        self.methods = route.methods or set()

    def match(self, parts: list[str]) -> dict[str, Any] | None:
        params: dict[str, Any] = {}
        for expected, actual in zip(self.segments, parts, strict=True):
            if expected.startswith("{"):
                if not actual:
                    return None
                params[expected[1:-1]] = actual
            elif expected != actual:
                return None
        return params


class FastRoutes:
    def __init__(self, app: ASGIApp, *, routes: Iterable[APIRoute], metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics
        self.exact: dict[tuple[str, str], APIRoute] = {}
        self.patterns: dict[int, list[_Pattern]] = {}
        for route in routes:
            if "{" in route.path:
                pattern = _Pattern(route)
                self.patterns.setdefault(len(pattern.segments), []).append(pattern)
            else:
                for method in route.methods or ():
                    self.exact[(method, route.path)] = route

    def find(self, method: str, path: str) -> tuple[APIRoute, dict[str, Any]] | None:
        route = self.exact.get((method, path))
        if route is not None:
            return route, {}
        parts = path.strip("/").split("/")
        for pattern in self.patterns.get(len(parts), ()):
            if method in pattern.methods:
                params = pattern.match(parts)
                if params is not None:
                    return pattern.route, params
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.find(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        route, params = found
        scope["route"] = route
        scope["path_params"] = params
        try:
            response = await route.endpoint(Request(scope, receive), **params)
        except ServiceError as error:
            self.metrics.rejected(error.reason)
            await send_error(send, error)
            return
        except Exception:
            log.exception("unhandled error")
            self.metrics.rejected("internal")
            await send_error(send, ServiceError("internal error; it has been logged"))
            return
        await response(scope, receive, send)
