"""Run a prediction only while its client is still connected.

A client that gives up (closed tab, client-side timeout) should not cost an
inference: a watcher waits for the ASGI `http.disconnect` message and cancels
the waiting request, whose rows the batcher then drops before the next batch.
"""

from __future__ import annotations

import asyncio

import numpy as np
from starlette.requests import Request
from starlette.types import Receive

from service.api.state import AppState, request_timeout
from service.errors import ClientDisconnected
from service.predictor import Predictions


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[object]) -> None:
    while True:  # the body is read: the next message is the disconnect
        message = await receive()
        if message["type"] == "http.disconnect":
            task.cancel()
            return


async def predict_while_connected(request: Request, pixels: np.ndarray) -> Predictions:
    """`Predictor.predict` for this request's pixels, within its deadline and connection."""
    state = AppState.of(request)
    task = asyncio.current_task()
    assert task is not None
    watcher = asyncio.get_running_loop().create_task(_cancel_on_disconnect(request.receive, task))
    try:
        return await state.predictor.predict(pixels, timeout_s=request_timeout(request))
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled() and task.uncancel() == 0:
            raise ClientDisconnected(
                "the client disconnected before its answer was ready"
            ) from None
        raise
    finally:
        watcher.cancel()
