"""`service.client`: the DigitClient class and the `mnist-client` CLI against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from evaluation.live_server import ROOT, LiveServer, free_port, live_server
from evaluation.samples import load_sample
from service.client import ClientError, DigitClient, main
from tests.conftest import SERVED_VERSION, png_bytes

SAMPLES = range(8)  # MNIST test digits 0..7: labels 7 2 1 0 4 1 4 9

pytestmark = pytest.mark.timeout(90)


def mnist(index: int) -> tuple[np.ndarray, int]:
    """Digit `index` of the committed MNIST test sample: 28x28 uint8 pixels and its label."""
    images, labels = load_sample()
    return images[index].copy(), int(labels[index])


png = png_bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("client")) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[DigitClient]:
    with DigitClient(server.url, timeout=10) as digit_client:
        yield digit_client


@pytest.fixture
def images(tmp_path: Path) -> list[tuple[Path, int]]:
    """MNIST test digits written as PNG files, with their labels."""
    files = []
    for index in SAMPLES:
        pixels, label = mnist(index)
        path = tmp_path / f"digit-{index}.png"
        path.write_bytes(png(pixels))
        files.append((path, label))
    return files


def unreachable_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def run_cli(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: a new process, `python -m service.client`."""
    environment = {key: value for key, value in os.environ.items() if key != "MNIST_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "service.client", *args],
        cwd=ROOT,
        env={**environment, **(env or {})},
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


# --- the class ----------------------------------------------------------------


def test_ready(client: DigitClient) -> None:
    assert client.ready() is True
    with DigitClient(unreachable_url(), timeout=2) as nobody:
        assert nobody.ready() is False


def test_predict_from_path_and_bytes(client: DigitClient, images: list[tuple[Path, int]]) -> None:
    for path, label in images:
        answer = client.predict(path)
        assert answer["digit"] == label
        assert answer == client.predict(path.read_bytes())
    assert len(answer["probabilities"]) == 10
    assert sum(answer["probabilities"]) == pytest.approx(1, abs=1e-3)
    assert answer["confidence"] == pytest.approx(max(answer["probabilities"]))
    assert answer["model"]["name"] == "mnist-mlp"


def test_predict_batch_keeps_the_order(client: DigitClient, images: list[tuple[Path, int]]) -> None:
    paths = [path for path, _ in images] * 3
    answers = client.predict_batch(paths)
    assert [answer["digit"] for answer in answers] == [label for _, label in images] * 3


def test_json_forms_agree_with_the_upload(client: DigitClient) -> None:
    pixels, label = mnist(0)
    assert client.predict_base64(png(pixels))["digit"] == label
    assert client.predict_pixels(pixels)["digit"] == label
    assert client.predict_pixels(pixels.tolist())["digit"] == label


def test_infer_v2(client: DigitClient) -> None:
    batch = [mnist(index) for index in SAMPLES]
    pixels = np.stack([p for p, _ in batch])
    answer = client.infer_v2(pixels)
    outputs = {output["name"]: output for output in answer["outputs"]}
    assert outputs["digit"]["data"] == [label for _, label in batch]
    assert outputs["probabilities"]["shape"] == [len(batch), 10]
    only = client.infer_v2(pixels[:2], version=SERVED_VERSION, outputs=["digit"])
    assert [output["name"] for output in only["outputs"]] == ["digit"]
    assert client.models()[0]["name"] == "mnist-mlp"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_v2_binary_and_json_agree(client: DigitClient, binary: bool) -> None:
    """Both encodings give the same answer shape and values; image files too."""
    batch = [mnist(index) for index in SAMPLES]
    pixels = np.stack([p for p, _ in batch])
    labels = [label for _, label in batch]
    answer = client.infer_v2(pixels, binary=binary)
    outputs = {output["name"]: output for output in answer["outputs"]}
    assert outputs["digit"]["data"] == labels
    assert all("parameters" not in output for output in answer["outputs"])
    files = client.infer_v2_images([png(p) for p, _ in batch[:3]], binary=binary)
    assert files["outputs"][1]["data"] == labels[:3]


def test_cli_infer_reads_npy_and_image_files(server: LiveServer, tmp_path: Path) -> None:
    pixels = np.stack([mnist(index)[0] for index in range(3)])
    np.save(tmp_path / "digits.npy", pixels)
    (tmp_path / "seven.png").write_bytes(png(mnist(0)[0]))
    for extra in ([], ["--json-tensors"]):
        done = run_cli(
            "infer", str(tmp_path / "digits.npy"), str(tmp_path / "seven.png"),
            "--url", server.url, *extra,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert [line.split(": ")[1].split()[0] for line in lines] == ["7", "2", "1", "7"]
        assert lines[0].startswith(f"{tmp_path / 'digits.npy'}[0]: 7 (confidence")


def test_service_errors_carry_the_service_message(client: DigitClient, server: LiveServer) -> None:
    expected = httpx.post(
        server.url + "/v1/predict", files={"file": ("x.png", b"not an image")}, timeout=10
    ).json()["error"]
    with pytest.raises(ClientError) as caught:
        client.predict(b"not an image")
    assert caught.value.status == 422
    assert caught.value.message == expected
    with pytest.raises(ClientError) as blank:
        client.predict(png(np.zeros((28, 28), np.uint8)))
    assert blank.value.status == 422 and "blank" in blank.value.message
    with pytest.raises(ClientError) as shape:
        client.predict_pixels(np.zeros((3, 5)))
    assert shape.value.status == 422 and "28" in shape.value.message
    with pytest.raises(ClientError) as unknown:
        client.infer_v2(mnist(0)[0], model="no-such-model")
    assert unknown.value.status == 404


def test_unreachable_service_is_a_client_error() -> None:
    url = unreachable_url()
    with DigitClient(url, timeout=2) as nobody, pytest.raises(ClientError) as caught:
        nobody.predict(png(mnist(0)[0]))
    assert caught.value.status is None
    assert f"cannot reach {url}" in caught.value.message


def test_non_json_errors_and_retry_after_without_a_server() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/predict/batch":
            return httpx.Response(429, json={"error": "queue full"}, headers={"Retry-After": "2"})
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    with DigitClient("http://svc", transport=httpx.MockTransport(handler)) as fake:
        with pytest.raises(ClientError) as proxy:
            fake.predict(b"x")
        assert (proxy.value.status, proxy.value.message) == (502, "<html>Bad Gateway</html>")
        with pytest.raises(ClientError) as busy:
            fake.predict_batch([b"x"])
        assert (busy.value.status, busy.value.message, busy.value.retry_after) == (
            429,
            "queue full",
            2.0,
        )


def test_api_key_is_sent(tmp_path: Path) -> None:
    with live_server(tmp_path, env={"MNIST_API_KEYS": "k-123"}) as locked:
        image = png(mnist(0)[0])
        with DigitClient(locked.url) as anonymous, pytest.raises(ClientError) as caught:
            anonymous.predict(image)
        assert caught.value.status == 401 and "API key" in caught.value.message
        with DigitClient(locked.url, api_key="k-123") as keyed:
            assert keyed.predict(image)["digit"] == 7
        path = tmp_path / "seven.png"
        path.write_bytes(image)
        from_env = run_cli(
            "predict", str(path), "--url", locked.url, env={"MNIST_API_KEY": "k-123"}
        )
        assert from_env.returncode == 0, from_env.stderr
        assert from_env.stdout.startswith(f"{path}: 7 (confidence ")


# --- the command line -----------------------------------------------------------


def test_cli_prints_digit_and_confidence(
    server: LiveServer, images: list[tuple[Path, int]]
) -> None:
    paths = [str(path) for path, _ in images[:3]]
    result = run_cli("predict", *paths, "--url", server.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for line, (path, label) in zip(lines, images, strict=False):
        assert line.startswith(f"{path}: {label} (confidence ")
        assert line.endswith(f"%, model version {SERVED_VERSION})")  # which version answered


def test_cli_json_and_stdin(server: LiveServer, images: list[tuple[Path, int]]) -> None:
    path, label = images[0]
    result = run_cli("predict", "-", "--json", "--url", server.url, stdin=path.read_bytes())
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["file"] == "-" and answer["digit"] == label
    assert len(answer["probabilities"]) == 10


def test_cli_bad_file_is_reported_and_fails(
    server: LiveServer, images: list[tuple[Path, int]], tmp_path: Path
) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a picture")
    good, label = images[0]
    result = run_cli("predict", str(bad), str(good), "--url", server.url)
    assert result.returncode == 1
    assert f"{bad}: error 422: the file is not a readable image" in result.stderr
    assert result.stdout.startswith(f"{good}: {label} ")  # the other files still answered


def test_cli_errors_in_process(
    server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.png"
    # A file that is not there is a usage error (exit 2), found before any request.
    assert main(["predict", str(missing), "--url", server.url]) == 2
    assert capsys.readouterr().err == f"mnist-client: {missing}: no such file\n"

    assert main(["predict", str(missing), "--json", "--url", server.url]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"{missing}: no such file" in err

    assert main(["ready", "--url", server.url]) == 0
    assert capsys.readouterr().out == "ready\n"

    with pytest.raises(SystemExit) as usage:
        main(["predict"])
    assert usage.value.code == 2


def test_cli_unreachable_service(tmp_path: Path) -> None:
    image = tmp_path / "seven.png"
    image.write_bytes(png(mnist(0)[0]))
    url = unreachable_url()
    result = run_cli("predict", str(image), "--url", url, "--timeout", "2")
    assert result.returncode == 3
    assert result.stderr.startswith(f"mnist-client: cannot reach {url}")
    assert result.stdout == ""
    assert run_cli("ready", "--url", url, "--timeout", "2").returncode == 1


# --- what the model saw ----------------------------------------------------------


def test_preprocess_returns_the_png_the_model_reads(
    client: DigitClient, images: list[tuple[Path, int]]
) -> None:
    path, label = images[0]
    picture = client.preprocess(path)
    assert picture.startswith(b"\x89PNG")
    assert client.predict(picture)["digit"] == label


def test_cli_preprocess_writes_the_model_view(
    server: LiveServer, images: list[tuple[Path, int]], tmp_path: Path
) -> None:
    path, label = images[0]
    out = tmp_path / "seen.png"
    result = run_cli("preprocess", str(path), "-o", str(out), "--url", server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path}: the model sees {out} (28x28 PNG)\n"
    with Image.open(out) as seen:
        assert seen.size == (28, 28) and seen.mode == "L"
    assert run_cli("predict", str(out), "--url", server.url).stdout.startswith(f"{out}: {label} ")


def test_cli_preprocess_errors(server: LiveServer, tmp_path: Path) -> None:
    missing = tmp_path / "missing.jpg"
    result = run_cli("preprocess", str(missing), "-o", str(tmp_path / "o.png"), "--url", server.url)
    assert result.returncode == 2
    assert result.stderr == f"mnist-client: {missing}: no such file\n"
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    result = run_cli("preprocess", str(text), "-o", str(tmp_path / "o.png"), "--url", server.url)
    assert result.returncode == 1
    assert "error 422" in result.stderr and not (tmp_path / "o.png").exists()
    usage = run_cli("preprocess", str(text), "--url", server.url)  # -o is required
    assert usage.returncode == 2 and "-o" in usage.stderr


def test_cli_marks_an_uncertain_answer(tmp_path: Path) -> None:
    image = tmp_path / "seven.png"
    image.write_bytes(png(mnist(0)[0]))
    # Thresholds that flag every answer short of certainty: the CLI must say so.
    with live_server(
        tmp_path, env={"MNIST_UNCERTAIN_BELOW": "1", "MNIST_UNCERTAIN_MARGIN": "1"}
    ) as strict:
        with DigitClient(strict.url) as strict_client:
            answer = strict_client.predict(image)
        result = run_cli("predict", str(image), "--url", strict.url)
    assert answer["uncertain"] is True and answer["confidence"] < 1
    assert result.returncode == 0
    second = sorted(range(10), key=lambda d: answer["probabilities"][d])[-2]
    assert result.stdout.strip().endswith(
        f", uncertain: maybe {second}; check it or retake the photo"
    )
