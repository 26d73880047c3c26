"""The floor: a raw ASGI app on uvicorn, no framework (read the body, Pillow decode,
one `session.run`, orjson). What Python can do per request on this machine.

    MODEL=models/mnist-mlp/2/model.int8.onnx uvicorn benchmarks.baselines.raw_asgi:app
"""

import io
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from PIL import Image

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(os.environ["MODEL"], options, providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
HEADERS = [(b"content-type", b"application/json")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] == "/healthz":
        answer = b'{"status":"ok"}'
    else:
        image = Image.open(io.BytesIO(body)).convert("L").resize((28, 28))
        pixels = np.asarray(image, dtype=np.float32).reshape(1, 784)
        (probabilities,) = session.run(["probabilities"], {input_name: pixels})
        digit = int(probabilities[0].argmax())
        answer = orjson.dumps({"digit": digit, "confidence": float(probabilities[0, digit])})
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": answer})
