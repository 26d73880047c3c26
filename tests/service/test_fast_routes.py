"""Hot endpoints are served directly, yet documented by FastAPI like every other one."""

from __future__ import annotations

from fastapi.testclient import TestClient

from evaluation.samples import SEVEN_PNG
from tests.conftest import SERVED_VERSION


def test_every_endpoint_is_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ["/v1/predict", "/v1/predict/batch", "/healthz", "/readyz",
                 "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer",
                 "/v1/models", "/metrics"]:  # fmt: skip
        assert path in paths, path


def test_hot_routes_answer_and_are_counted_by_their_template(client: TestClient) -> None:
    answer = client.post(
        f"/v2/models/mnist-mlp/versions/{SERVED_VERSION}/infer",
        json={"inputs": [{"name": "image_u8", "shape": [1, 784], "datatype": "UINT8",
                          "data": [255 if 12 <= i % 28 <= 15 else 0 for i in range(784)]}]},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert (
        client.post("/v1/predict", content=SEVEN_PNG, headers={"Content-Type": "image/png"}).json()[
            "digit"
        ]
        == 7
    )
    metrics = client.get("/metrics").text
    assert (
        'mnist_http_requests_total{method="POST",protocol="http",'
        'route="/v2/models/{name}/versions/{version}/infer",status="200"} 1.0' in metrics
    )
    assert 'route="/v1/predict",status="200"} 1.0' in metrics


def test_a_typed_error_in_a_hot_route_answers_like_anywhere_else(client: TestClient) -> None:
    unknown_model = client.post("/v2/models/other/infer", json={"inputs": []})
    unknown_version = client.get("/v2/models/mnist-mlp/versions/9")  # served by FastAPI
    for answer in (unknown_model, unknown_version):
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/json"
        assert "not found" in answer.json()["error"]


def test_unknown_paths_fall_through_to_a_json_404(client: TestClient) -> None:
    answer = client.post("/v1/nothing-here")
    assert answer.status_code == 404 and "see /docs" in answer.json()["error"]
