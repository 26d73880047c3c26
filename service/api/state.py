"""What the routes need from the running app, in one typed object on `app.state`."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from service.api.parsing import Limits
from service.config import Settings
from service.errors import InvalidInput
from service.lifecycle import Lifecycle
from service.metrics import ServiceMetrics
from service.model import LoadedModelInfo
from service.predictor import Predictor

TIMEOUT_HEADER = "x-request-timeout-ms"


@dataclass
class AppState:
    settings: Settings
    limits: Limits
    lifecycle: Lifecycle
    metrics: ServiceMetrics
    # Set by the lifespan once the model is loaded and warm.
    predictor: Predictor = field(init=False)
    model: LoadedModelInfo = field(init=False)
    model_ref: dict[str, object] = field(init=False)

    @staticmethod
    def of(request: Request) -> AppState:
        state: AppState = request.app.state.service
        return state


def request_timeout(request: Request) -> float | None:
    """The optional per-request deadline header, in milliseconds (it can only shorten)."""
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        milliseconds = float(raw)
    except ValueError:
        milliseconds = -1.0
    if not 0 < milliseconds < 1e9:
        raise InvalidInput(f"{TIMEOUT_HEADER} must be a positive number of milliseconds")
    return milliseconds / 1000
