"""Triton's model repository extension: list, load and unload model versions.

    POST /v2/repository/index                 [{"name", "version", "state", "reason"}, ...]
    POST /v2/repository/models/{name}/load    {"parameters": {"config": "<model config JSON>"}}
    POST /v2/repository/models/{name}/unload

Unmodified `tritonclient.http` drives it (`get_model_repository_index`,
`load_model`, `unload_model`). A load re-reads the repository and serves what
the version policy picks; `config` may carry Triton's `version_policy` for this
load (e.g. `{"version_policy": {"specific": {"versions": [1]}}}`). The router is
mounted only when `Settings.repository_api_enabled()`, and admission requires an
API key on these paths whenever keys are set. The routes only parse and answer;
`service.model_control` does the work.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.answers import JSONAnswer
from service.api.asgi import read_body
from service.api.auth import documented_schemes
from service.api.schemas import ErrorBody, error_responses
from service.errors import BadRequest
from service.model_control import ModelControl
from service.versions import VersionPolicy

MAX_BODY_BYTES = 64 * 1024
PLATFORMS = {"onnxruntime_onnx", "onnxruntime"}
CONFIG_KEYS = {"name", "platform", "backend", "version_policy"}


def body_object(raw: bytes) -> dict[str, Any]:
    """The JSON object of a repository request; an empty body is `{}`."""
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"the body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def load_policy(body: dict[str, Any], name: str) -> VersionPolicy | None:
    """The version policy a load request asks for (None: the configured one)."""
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be an object")
    if any(key.startswith("file:") for key in parameters):
        raise BadRequest(
            "file overrides are not supported: copy the version folder into the model "
            "repository (write it elsewhere, then rename it into place) and load again"
        )
    unknown = set(parameters) - {"config"}
    if unknown:
        raise BadRequest(f"unknown load parameter(s) {sorted(unknown)}; supported: config")
    if "config" not in parameters:
        return None
    raw = parameters["config"]
    try:
        config = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"'config' is not JSON: {error}") from None
    if not isinstance(config, dict):
        raise BadRequest("'config' must be a JSON object (a Triton model configuration)")
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise BadRequest(
            f"config field(s) {sorted(unknown)} are not supported; supported: "
            f"{sorted(CONFIG_KEYS)} (this server takes batching and threads from its settings)"
        )
    if config.get("name", name) != name:
        raise BadRequest(f"config names model {config['name']!r}, not {name!r}")
    platform = config.get("platform") or config.get("backend")
    if platform is not None and platform not in PLATFORMS:
        raise BadRequest(f"platform {platform!r} is not served here; only onnxruntime_onnx")
    if "version_policy" not in config:
        return None
    try:
        return VersionPolicy.from_triton(config["version_policy"])
    except ValueError as error:
        raise BadRequest(str(error)) from None


CHANGE_RESPONSES = {
    **error_responses(400, 401, 404),
    500: {"model": ErrorBody, "description": "Applied here, but not by every worker in time"},
}
INDEX_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"example": {"ready": False}}},
    }
}
LOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "examples": {
                    "reload with the configured policy": {"value": {}},
                    "serve only version 1 (rollback)": {
                        "value": {
                            "parameters": {
                                "config": '{"version_policy": {"specific": {"versions": [1]}}}'
                            }
                        }
                    },
                }
            }
        },
    }
}


def build_router(control: ModelControl) -> APIRouter:
    router = APIRouter(
        prefix="/v2/repository",
        tags=["Model repository (Triton extension)"],
        dependencies=documented_schemes,
    )

    async def read_object(request: Request) -> dict[str, Any]:
        return body_object(await read_body(request.scope, request.receive, MAX_BODY_BYTES))

    @router.post(
        "/index",
        summary="Every version in the repository with its state",
        responses=error_responses(400, 401),
        openapi_extra=INDEX_BODY,
    )
    async def index(request: Request) -> Response:
        """One entry per version: READY (served), LOADING, UNLOADING (finishing its last
        requests) or UNAVAILABLE with the reason (not picked by the version policy, failed
        its checks, unloaded). Body `{"ready": true}` lists only READY versions."""
        body = await read_object(request)
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise BadRequest("'ready' must be true or false")
        return JSONAnswer(control.index(ready_only=ready))

    @router.post(
        "/models/{name}/load",
        summary="Load or reload a model: serve what the version policy picks",
        responses=CHANGE_RESPONSES,
        openapi_extra=LOAD_BODY,
    )
    async def load(request: Request, name: str) -> Response:
        """Re-reads the repository and serves the versions the policy picks (the configured
        one, or `version_policy` from `parameters.config`). New versions are checked and
        warmed up before traffic moves to them; requests in flight finish on the version
        they started on. On failure (400) the served versions are unchanged."""
        policy = load_policy(await read_object(request), name)
        versions = await control.load(name, policy)
        return JSONAnswer(
            {"name": name, "versions": [str(v) for v in versions], "policy": str(control.policy)}
        )

    @router.post(
        "/models/{name}/unload",
        summary="Take a model out of service",
        responses=CHANGE_RESPONSES,
    )
    async def unload(request: Request, name: str) -> Response:
        """Every version leaves service (requests in flight still finish); a later load
        brings the model back. `unload_dependents` is accepted and has nothing to do."""
        await read_object(request)
        await control.unload(name)
        return JSONAnswer({"name": name, "versions": []})

    return router
