"""A small client for mnist-serve: a typed class for scripts and tests, and a CLI.

    mnist-client predict digit.png photo.jpg [--url http://127.0.0.1:8000] [--json]
    mnist-client infer digits.npy digit.png     # Open Inference Protocol v2, binary tensors
    mnist-client predict digit.png --model-version 2     # ask one served version
    MNIST_API_KEY=... mnist-client predict - < digit.png
    mnist-client models                                  # the served versions
    mnist-client preprocess photo.jpg -o seen.png     # the 28x28 image the model receives
    mnist-client ready

From Python:

    with DigitClient("http://127.0.0.1:8000") as client:
        answer = client.predict(Path("digit.png"))
        print(answer["digit"], answer["confidence"], answer["model"]["version"])

Errors from the service (its `{"error": "..."}` answers) and network failures
raise `ClientError`; `.status` is the HTTP status, or None when no answer came.
CLI exit codes: 0 all images recognised (or `ready`: the service is ready), 1 some
image or request rejected (or not ready), 2 bad usage (including an image file that
does not exist or cannot be read), 3 the service could not be reached.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypedDict, cast

import httpx
import numpy as np
import numpy.typing as npt

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 10.0

ImageInput = bytes | str | os.PathLike[str]


class ModelRef(TypedDict):
    name: str
    version: int | str


class Prediction(TypedDict):
    digit: int
    confidence: float
    uncertain: bool  # low top probability or two close digits: check it or retake the photo
    probabilities: list[float]
    model: ModelRef


class ClientError(Exception):
    """The service refused a request (`status` set) or could not be reached (`status` None)."""

    def __init__(self, status: int | None, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {message}" if status is not None else message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def read_image(image: ImageInput) -> tuple[str, bytes]:
    """(file name, bytes) of an image given as bytes or a path."""
    if isinstance(image, bytes):
        return "image", image
    path = Path(image)
    return path.name, path.read_bytes()


class DigitClient:
    """A synchronous client; reuses one connection pool. Use it as a context manager or
    call `close()`. `api_key` is sent as `X-API-Key`; `model_version` (sent as
    `X-Model-Version`) asks every prediction of a served version instead of the newest.
    Each answer's `model` names the version that answered."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        model_version: int | str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": "mnist-client/0.1"}
        if api_key:
            headers["X-API-Key"] = api_key
        if model_version is not None:
            headers["X-Model-Version"] = str(model_version)
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- requests -------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The successful response, or a `ClientError`."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ClientError(
                None, f"no answer from {self.base_url} within the timeout ({exc})"
            ) from exc
        except httpx.TransportError as exc:
            raise ClientError(None, f"cannot reach {self.base_url}: {exc}") from exc
        if response.is_success:
            return response
        raise _error_from(response)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ClientError(response.status_code, "the answer is not JSON") from exc

    def predict(self, image: ImageInput) -> Prediction:
        """Recognise one image file (PNG, JPEG, ...), given as bytes or a path."""
        name, data = read_image(image)
        files = {"file": (name, data, "application/octet-stream")}
        return cast(Prediction, self._request("POST", "/v1/predict", files=files))

    def preprocess(self, image: ImageInput) -> bytes:
        """The 28x28 PNG the model receives for this image (`POST /v1/preprocess`)."""
        name, data = read_image(image)
        files = {"file": (name, data, "application/octet-stream")}
        try:
            response = self._http.post("/v1/preprocess", files=files)
        except httpx.TimeoutException as exc:
            raise ClientError(
                None, f"no answer from {self.base_url} within the timeout ({exc})"
            ) from exc
        except httpx.TransportError as exc:
            raise ClientError(None, f"cannot reach {self.base_url}: {exc}") from exc
        if not response.is_success:
            raise _error_from(response)
        return response.content

    def predict_batch(self, images: Iterable[ImageInput]) -> list[Prediction]:
        """Recognise many images in one request; the answers keep the input order."""
        files = [
            ("files", (name, data, "application/octet-stream"))
            for name, data in map(read_image, images)
        ]
        answer = self._request("POST", "/v1/predict/batch", files=files)
        return cast(list[Prediction], answer["predictions"])

    def predict_base64(self, image: ImageInput) -> Prediction:
        """Like `predict`, sent as JSON `{"image": "<base64>"}`."""
        _, data = read_image(image)
        body = {"image": base64.b64encode(data).decode("ascii")}
        return cast(Prediction, self._request("POST", "/v1/predict", json=body))

    def predict_pixels(self, pixels: npt.ArrayLike) -> Prediction:
        """Recognise a 28x28 array of 0..255 intensities, white digit on black (MNIST style)."""
        array = np.asarray(pixels, dtype=np.float64)
        return cast(
            Prediction, self._request("POST", "/v1/predict", json={"pixels": array.tolist()})
        )

    def infer_v2(
        self,
        pixels: npt.ArrayLike,
        *,
        model: str = "mnist-mlp",
        version: str | int | None = None,
        outputs: Sequence[str] | None = None,
        binary: bool = True,
    ) -> dict[str, Any]:
        """Open Inference Protocol v2: classify N 28x28 UINT8 images (0..255, white on
        black). `binary` sends the pixels and gets the outputs as raw bytes (Triton's
        binary tensor extension: no JSON numbers either way); otherwise JSON tensors.
        Either way the answer is the protocol's JSON, each output's values in "data"."""
        array = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(-1, 28, 28)
        values = [] if binary else array.ravel().tolist()
        shape = list(array.shape)
        return self._infer(
            "image_u8", "UINT8", shape, array.tobytes(), values, model, version, outputs, binary
        )

    def infer_v2_images(
        self,
        images: Iterable[ImageInput],
        *,
        model: str = "mnist-mlp",
        version: str | int | None = None,
        outputs: Sequence[str] | None = None,
        binary: bool = True,
    ) -> dict[str, Any]:
        """Open Inference Protocol v2: classify image files (PNG, JPEG, ...) through the
        BYTES input `image`, as raw bytes (`binary`) or base64 strings in JSON."""
        blobs = [data for _, data in map(read_image, images)]
        raw = b"".join(len(blob).to_bytes(4, "little") + blob for blob in blobs)
        encoded = [] if binary else [base64.b64encode(b).decode("ascii") for b in blobs]
        return self._infer(
            "image", "BYTES", [len(blobs)], raw, encoded, model, version, outputs, binary
        )

    def _infer(
        self,
        name: str,
        datatype: str,
        shape: list[int],
        raw: bytes,
        values: list[Any],
        model: str,
        version: str | int | None,
        outputs: Sequence[str] | None,
        binary: bool,
    ) -> dict[str, Any]:
        tensor: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype}
        request: dict[str, Any] = {"inputs": [tensor]}
        if binary:
            tensor["parameters"] = {"binary_data_size": len(raw)}
            request["parameters"] = {"binary_data_output": True}
        else:
            tensor["data"] = values
        if outputs is not None:
            request["outputs"] = [{"name": output} for output in outputs]
        head = json.dumps(request).encode()
        headers = {"Inference-Header-Content-Length": str(len(head))} if binary else {}
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "")
        body = head + raw if binary else head
        response = self._send("POST", f"{path}/infer", content=body, headers=headers)
        return decode_v2_answer(response)

    def models(self) -> list[dict[str, Any]]:
        """The served model versions, oldest first, with their cards."""
        return cast(list[dict[str, Any]], self._request("GET", "/v1/models")["models"])

    def ready(self) -> bool:
        """True when the service is up, its model loaded and warm; never raises."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False


_DTYPES = {"FP32": "<f4", "INT64": "<i8", "UINT8": "u1"}


def decode_v2_answer(response: httpx.Response) -> dict[str, Any]:
    """An infer answer (JSON, or a JSON header plus binary outputs) -> the JSON form,
    with each binary output's values decoded into its "data"."""
    body = response.content
    length = response.headers.get("inference-header-content-length")
    head = body if length is None else body[: int(length)]
    try:
        answer: dict[str, Any] = json.loads(head)
    except ValueError as exc:
        raise ClientError(response.status_code, "the answer is not JSON") from exc
    offset = len(head)
    for output in answer.get("outputs", []):
        size = output.get("parameters", {}).pop("binary_data_size", None)
        if size is None:
            continue
        data = np.frombuffer(body[offset : offset + size], _DTYPES[output["datatype"]])
        output["data"] = data.tolist()
        offset += size
        if not output["parameters"]:
            del output["parameters"]
    return answer


def _error_from(response: httpx.Response) -> ClientError:
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            message = body["error"]
    except ValueError:
        pass
    if not message:
        text = response.text.strip().replace("\n", " ")
        message = text[:200] or response.reason_phrase or "no details"
    retry_after: float | None = None
    try:
        retry_after = float(response.headers["retry-after"])
    except (KeyError, ValueError):
        retry_after = None
    return ClientError(response.status_code, message, retry_after)


# --- command line ----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-client", description="Recognise handwritten digits with an mnist-serve service."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("MNIST_URL", DEFAULT_URL),
        help=f"service address (env MNIST_URL; default {DEFAULT_URL})",
    )
    common.add_argument(
        "--api-key",
        default=os.environ.get("MNIST_API_KEY"),
        help="API key, sent as X-API-Key (default: env MNIST_API_KEY)",
    )
    common.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per request"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = commands.add_parser(
        "predict", parents=[common], help="recognise the digit in each image file"
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image file; '-' = stdin")
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    infer = commands.add_parser(
        "infer",
        parents=[common],
        help="classify through the Open Inference Protocol v2 (binary tensors by default)",
        description="Each .npy file (shape (N, 28, 28), 0..255, white on black) is sent as "
        "one UINT8 tensor; other files together as one BYTES tensor of image files.",
    )
    infer.add_argument("files", nargs="+", metavar="FILE", help=".npy array or image file")
    infer.add_argument(
        "--json-tensors", action="store_true", help="JSON tensors instead of binary ones"
    )
    infer.add_argument("--model", default="mnist-mlp", help="model name (default mnist-mlp)")
    predict.add_argument(
        "--model-version",
        metavar="N",
        help="ask this served model version (default: the newest the service serves)",
    )
    commands.add_parser("models", parents=[common], help="list the served model versions")
    preprocess = commands.add_parser(
        "preprocess",
        parents=[common],
        help="save the 28x28 image the model receives for an image (PNG)",
    )
    preprocess.add_argument("image", metavar="IMAGE", help="image file; '-' = stdin")
    preprocess.add_argument(
        "-o", "--output", required=True, metavar="OUT.png", help="where to write the PNG"
    )
    commands.add_parser("ready", parents=[common], help="exit 0 if the service is ready")
    return parser


def _unreadable(names: Sequence[str]) -> str | None:
    """A usage error for the first input file that cannot be read, before any request."""
    for name in names:
        if name == "-":
            continue
        path = Path(name)
        if not path.is_file():
            why = "is a folder" if path.is_dir() else "no such file"
            return f"{name}: {why}"
        if not os.access(path, os.R_OK):
            return f"{name}: not readable (permission denied)"
    return None


def _read_input(name: str) -> bytes:
    return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()


def _run_preprocess(client: DigitClient, image: str, output: str) -> int:
    try:
        picture = client.preprocess(_read_input(image))
    except ClientError as exc:
        if exc.status is None:
            print(f"mnist-client: {exc.message}; is the service running?", file=sys.stderr)
            return 3
        _report(image, exc.status, exc.message, as_json=False)
        return 1
    try:
        Path(output).write_bytes(picture)
    except OSError as exc:
        print(f"mnist-client: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"{image}: the model sees {output} (28x28 PNG)", flush=True)
    return 0


def _run_predict(client: DigitClient, images: list[str], as_json: bool) -> int:
    failed = False
    for name in images:
        try:
            data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        except OSError as exc:
            failed = True
            _report(name, None, f"cannot read the file: {exc.strerror or exc}", as_json)
            continue
        try:
            answer = client.predict(data)
        except ClientError as exc:
            if exc.status is None:
                print(f"mnist-client: {exc.message}; is the service running?", file=sys.stderr)
                return 3
            failed = True
            _report(name, exc.status, exc.message, as_json)
            continue
        if as_json:
            print(json.dumps({"file": name, **answer}), flush=True)
        else:
            print(f"{name}: {_describe(answer)}", flush=True)
    return 1 if failed else 0


def _run_infer(client: DigitClient, files: list[str], binary: bool, model: str) -> int:
    """One request per .npy file, one for all image files; one line per image."""
    arrays = [name for name in files if name.endswith(".npy")]
    images = [name for name in files if not name.endswith(".npy")]
    jobs: list[tuple[list[str], Any]] = []
    try:
        for name in arrays:
            pixels = np.load(name, allow_pickle=False)
            labels = [f"{name}[{index}]" for index in range(len(pixels))]
            jobs.append((labels, lambda p=pixels: client.infer_v2(p, model=model, binary=binary)))
        if images:
            blobs = [Path(name).read_bytes() for name in images]
            jobs.append((images, lambda: client.infer_v2_images(blobs, model=model, binary=binary)))
    except (OSError, ValueError) as exc:
        print(f"mnist-client: cannot read the input: {exc}", file=sys.stderr)
        return 2
    failed = False
    for labels, call in jobs:
        try:
            answer = call()
        except ClientError as exc:
            if exc.status is None:
                print(f"mnist-client: {exc.message}; is the service running?", file=sys.stderr)
                return 3
            failed = True
            print(f"{labels[0]}...: error {exc.status}: {exc.message}", file=sys.stderr)
            continue
        outputs = {output["name"]: output for output in answer["outputs"]}
        probabilities = np.asarray(outputs["probabilities"]["data"]).reshape(-1, 10)
        for label, digit, row in zip(labels, outputs["digit"]["data"], probabilities, strict=True):
            confidence = math.floor(float(row[digit]) * 1000) / 10
            print(f"{label}: {digit} (confidence {confidence:.1f}%)", flush=True)
    return 1 if failed else 0


def _describe(answer: Prediction) -> str:
    confidence = math.floor(answer["confidence"] * 1000) / 10  # never round up to 100%
    version = answer["model"]["version"]
    text = f"{answer['digit']} (confidence {confidence:.1f}%, model version {version})"
    if answer.get("uncertain"):
        ranked = sorted(range(10), key=lambda d: answer["probabilities"][d], reverse=True)
        text += f", uncertain: maybe {ranked[1]}; check it or retake the photo"
    return text


def _run_models(client: DigitClient) -> int:
    try:
        models = client.models()
    except ClientError as exc:
        print(f"mnist-client: {exc}", file=sys.stderr)
        return 3 if exc.status is None else 1
    for model in models:
        accuracy = model["card"].get("metrics", {}).get("mnist_test", {}).get("accuracy")
        measured = f", MNIST test accuracy {accuracy:.2%}" if isinstance(accuracy, float) else ""
        print(f"{model['name']} version {model['version']} ({model['variant']}{measured})")
    return 0


def _report(name: str, status: int | None, message: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"file": name, "status": status, "error": message}), flush=True)
    else:
        where = f"error {status}" if status is not None else "error"
        print(f"{name}: {where}: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mnist-client` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    inputs = {"predict": getattr(args, "images", []), "preprocess": [getattr(args, "image", "")]}
    problem = _unreadable(inputs.get(args.command, []))
    if problem is not None:
        print(f"mnist-client: {problem}", file=sys.stderr)
        return 2
    version = getattr(args, "model_version", None)
    with DigitClient(
        args.url, api_key=args.api_key, timeout=args.timeout, model_version=version
    ) as client:
        if args.command == "preprocess":
            return _run_preprocess(client, args.image, args.output)
        if args.command == "ready":
            ready = client.ready()
            print("ready" if ready else f"not ready (or not reachable): {args.url}")
            return 0 if ready else 1
        if args.command == "infer":
            return _run_infer(client, args.files, not args.json_tensors, args.model)
        if args.command == "models":
            return _run_models(client)
        return _run_predict(client, args.images, args.json)


if __name__ == "__main__":
    sys.exit(main())
