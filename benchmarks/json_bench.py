"""JSON costs per request, in-process: where encoding and decoding time goes.

    taskset -c 1 python -m benchmarks.json_bench

Measured (median of many calls, ms):
  - the v2 raw-pixel request (UINT8 [64,28,28]): FastAPI's path (stdlib
    `json.loads`, pydantic, then `v2._pixel_rows`, which builds an object array
    to flatten) against a proposed path (`orjson.loads`, or pydantic's own
    `model_validate_json`, then `np.asarray(data, float32)` directly);
  - answers: a 64-prediction batch answer and a single answer with orjson
    (what the service uses) against the stdlib `json.dumps`.
Prints one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from evaluation.uploads import build_pool
from service.api.rest import prediction_items
from service.api.v2 import InferenceRequest, _pixel_rows
from service.predictor import Predictions

MODEL_REF: dict[str, object] = {"name": "mnist-mlp", "version": 1}


def median_ms(function: Callable[[], object], calls: int = 50) -> float:
    function()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return round(statistics.median(samples) * 1000, 4)


def current_v2(body: bytes) -> np.ndarray:
    """What the service does today: FastAPI reads JSON bodies with the stdlib."""
    request = InferenceRequest.model_validate(json.loads(body))
    return _pixel_rows(request.inputs[0])


def proposed_v2(body: bytes, *, pydantic_json: bool = False) -> np.ndarray:
    """orjson (or pydantic's own JSON parser) into the same model, then one numpy
    conversion of the nested lists with the same checks."""
    if pydantic_json:
        request = InferenceRequest.model_validate_json(body)
    else:
        request = InferenceRequest.model_validate(orjson.loads(body))
    tensor = request.inputs[0]
    values = np.asarray(tensor.data, dtype=np.float32).ravel()
    rows = tensor.shape[0]
    if values.size != rows * 784 or not np.isfinite(values).all():
        raise ValueError("bad tensor")
    if values.min() < 0 or values.max() > 255 or not np.array_equal(values, np.round(values)):
        raise ValueError("bad pixel values")
    return values.reshape(rows, 28, 28)


def main() -> None:
    pool = build_pool(64, kinds=("png28",), seed=1)
    tensor = {"name": "pixels", "shape": [64, 28, 28], "datatype": "UINT8",
              "data": [item.pixels for item in pool]}  # fmt: skip
    body = orjson.dumps({"inputs": [tensor]})
    assert np.array_equal(current_v2(body), proposed_v2(body))

    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(10), 64).astype(np.float32)
    batch = Predictions(probabilities, probabilities.argmax(1), probabilities.max(1))
    single = Predictions(probabilities[:1], probabilities[:1].argmax(1), probabilities[:1].max(1))

    def orjson_answer(result: Predictions) -> bytes:
        items = prediction_items(result, MODEL_REF)
        return orjson.dumps({"predictions": items}, option=orjson.OPT_SERIALIZE_NUMPY)

    def stdlib_answer(result: Predictions) -> str:
        items = [
            {**item, "probabilities": np.asarray(item["probabilities"]).tolist()}
            for item in prediction_items(result, MODEL_REF)
        ]
        return json.dumps({"predictions": items})

    report: dict[str, Any] = {
        "v2_uint8_64_request_kb": round(len(body) / 1024, 1),
        "v2_parse_current_ms": median_ms(lambda: current_v2(body)),
        "v2_parse_proposed_orjson_ms": median_ms(lambda: proposed_v2(body)),
        "v2_parse_proposed_pydantic_json_ms": median_ms(
            lambda: proposed_v2(body, pydantic_json=True)
        ),
        "json_loads_stdlib_ms": median_ms(lambda: json.loads(body)),
        "json_loads_orjson_ms": median_ms(lambda: orjson.loads(body)),
        "batch64_answer_orjson_ms": median_ms(lambda: orjson_answer(batch)),
        "batch64_answer_stdlib_ms": median_ms(lambda: stdlib_answer(batch)),
        "single_answer_orjson_ms": median_ms(lambda: orjson_answer(single), 500),
        "single_answer_stdlib_ms": median_ms(lambda: stdlib_answer(single), 500),
    }
    sys.stdout.write(orjson.dumps(report).decode() + "\n")


if __name__ == "__main__":
    main()
