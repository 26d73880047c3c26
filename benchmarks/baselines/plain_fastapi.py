"""The plain app a user would write instead of mnist-serve (the baseline to beat).

FastAPI, one `session.run` per request, Pillow resize to 28x28, orjson answer;
no batching, no preprocessing beyond the resize, no metrics, no limits.

    MODEL=models/mnist-mlp/2/model.int8.onnx uvicorn benchmarks.baselines.plain_fastapi:app
"""

import io
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request
from fastapi.responses import ORJSONResponse
from PIL import Image

options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(os.environ["MODEL"], options, providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
app = FastAPI()


def answer(pixels: np.ndarray) -> ORJSONResponse:
    (probabilities,) = session.run(["probabilities"], {input_name: pixels.reshape(1, 784)})
    digit = int(probabilities[0].argmax())
    return ORJSONResponse({"digit": digit, "confidence": float(probabilities[0, digit])})


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
async def predict(request: Request) -> ORJSONResponse:
    image = Image.open(io.BytesIO(await request.body())).convert("L").resize((28, 28))
    return answer(np.asarray(image, dtype=np.float32))


@app.post("/predict/json")
async def predict_json(request: Request) -> ORJSONResponse:
    body = await request.json()
    if "pixels" in body:
        return answer(np.asarray(body["pixels"], dtype=np.float32))
    import base64

    image = Image.open(io.BytesIO(base64.b64decode(body["image"]))).convert("L").resize((28, 28))
    return answer(np.asarray(image, dtype=np.float32))
