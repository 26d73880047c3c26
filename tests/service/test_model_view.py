"""`POST /v1/preprocess`: the 28x28 image the model receives, through the real app.

Its PNG posted back to `/v1/predict` must give the same digit as the original
upload, for every kind of upload the project renders; it takes the same inputs,
limits and errors as `/v1/predict`, is counted in the metrics, and documented.
"""

from __future__ import annotations

import base64
import io
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from evaluation.samples import SEVEN_PNG
from evaluation.uploads import KINDS, render
from tests.conftest import png_bytes

PER_KIND = 12
# What `curl -F file=digit.png` (the @ forgotten) sends: a text field named "file".
TEXT_FIELD: dict[str, Any] = {
    "content": b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\ndigit.png\r\n--b--\r\n',
    "headers": {"content-type": "multipart/form-data; boundary=b"},
}


def as_image(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def model_view(client: TestClient, **request: Any) -> bytes:
    answer = client.post("/v1/preprocess", **request)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    return answer.content


def predicted(client: TestClient, **request: Any) -> dict[str, Any]:
    answer = client.post("/v1/predict", **request)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_the_model_view_is_a_28x28_white_on_black_png(client: TestClient) -> None:
    image = as_image(model_view(client, files={"file": ("seven.png", SEVEN_PNG, "image/png")}))
    assert image.format == "PNG" and image.size == (28, 28) and image.mode == "L"
    pixels = np.asarray(image)
    # MNIST style: black background (the border), the digit's bright pixels inside.
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    assert border.max() == 0 and pixels.max() == 255


@pytest.mark.parametrize("kind", KINDS)
def test_posting_the_model_view_back_gives_the_same_digit(
    client: TestClient, mnist_sample: tuple[np.ndarray, np.ndarray], kind: str
) -> None:
    images, _ = mnist_sample
    rng = random.Random(kind)
    for index in range(PER_KIND):
        body, content_type = render(images[index], kind, rng)
        original = predicted(client, content=body, headers={"content-type": content_type})
        view = model_view(client, content=body, headers={"content-type": content_type})
        again = predicted(client, files={"file": ("seen.png", view, "image/png")})
        assert again["digit"] == original["digit"], (kind, index)
        # The view is 8-bit: the answer moves by rounding noise only.
        assert again["confidence"] == pytest.approx(original["confidence"], abs=0.02)


def test_every_input_form_is_accepted(client: TestClient) -> None:
    pixels = np.asarray(as_image(SEVEN_PNG))
    views = [
        model_view(client, files={"file": ("seven.png", SEVEN_PNG, "image/png")}),
        model_view(client, content=SEVEN_PNG, headers={"content-type": "image/png"}),
        model_view(client, json={"image": base64.b64encode(SEVEN_PNG).decode()}),
        model_view(client, json={"pixels": pixels.tolist()}),
    ]
    assert all(view == views[0] for view in views)  # one preprocessing for every form
    assert predicted(client, files={"file": ("v.png", views[0], "image/png")})["digit"] == 7


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"content": b"", "headers": {"content-type": "image/png"}}, 422),
        ({"content": b"GIF89a-not-really", "headers": {"content-type": "image/gif"}}, 422),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
        ({"json": {"pixels": [[0] * 28] * 28}}, 422),
        ({"json": {"image": "@@not base64@@"}}, 422),
        (TEXT_FIELD, 422),
        ({"files": {"wrong": ("d.png", SEVEN_PNG, "image/png")}}, 422),
    ],
)
def test_errors_are_those_of_predict(
    client: TestClient, kwargs: dict[str, Any], status: int
) -> None:
    view = client.post("/v1/preprocess", **kwargs)
    prediction = client.post("/v1/predict", **kwargs)
    assert view.status_code == prediction.status_code == status, view.text
    assert view.json() == prediction.json()


def test_a_text_field_instead_of_a_file_says_how_to_upload(client: TestClient) -> None:
    answer = client.post("/v1/preprocess", **TEXT_FIELD)
    assert answer.json()["error"] == (
        "multipart field 'file' holds text, not a file; "
        "upload the file itself, e.g. curl -F file=@digit.png"
    )


def test_limits_are_those_of_predict(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_upload_bytes=2000, max_image_pixels=10_000)
    big = client.post("/v1/preprocess", content=b"\0" * 5000, headers={"content-type": "image/png"})
    assert big.status_code == 413 and "2000" in big.json()["error"]
    wide = png_bytes(np.zeros((10, 2000), dtype=np.uint8))
    assert len(wide) < 2000
    huge = client.post("/v1/preprocess", content=wide, headers={"content-type": "image/png"})
    assert huge.status_code == 413 and "10000" in huge.json()["error"].replace(",", "")


def test_api_keys_guard_it_like_predict(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys="k-1")
    unsigned = client.post(
        "/v1/preprocess", content=SEVEN_PNG, headers={"content-type": "image/png"}
    )
    assert unsigned.status_code == 401
    headers = {"content-type": "image/png", "x-api-key": "k-1"}
    assert client.post("/v1/preprocess", content=SEVEN_PNG, headers=headers).status_code == 200


def test_it_is_counted_in_the_metrics(client: TestClient) -> None:
    def served() -> float:
        for line in client.get("/metrics").text.splitlines():
            counted = line.startswith("mnist_http_requests_total{") and 'status="200"' in line
            if counted and '"/v1/preprocess"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = served()
    model_view(client, content=SEVEN_PNG, headers={"content-type": "image/png"})
    model_view(client, content=SEVEN_PNG, headers={"content-type": "image/png"})
    assert served() == before + 2


def test_it_is_documented(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/preprocess"]["post"]
    assert "image/png" in operation["responses"]["200"]["content"]
    assert {"multipart/form-data", "image/png", "application/json"} <= set(
        operation["requestBody"]["content"]
    )
    for status in ("401", "413", "415", "422", "429"):
        assert status in operation["responses"]


@pytest.mark.parametrize("path", ["/v1/predict/", "/v1/preprocess/"])
def test_a_trailing_slash_is_served_not_redirected(client: TestClient, path: str) -> None:
    answer = client.post(
        path, files={"file": ("seven.png", SEVEN_PNG, "image/png")}, follow_redirects=False
    )
    assert answer.status_code == 200, answer.text
    assert client.get("/v1/models/", follow_redirects=False).status_code == 200
    assert client.get("/docs/", follow_redirects=False).status_code == 200
