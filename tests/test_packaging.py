"""`pip install .` then `mnist-serve` works from any directory: the wheel carries the
served model, and an installed copy serves it with no repository configured.

The wheel is built from a copy of the checkout (no build isolation: setuptools is
installed), installed into a fresh virtual environment that sees the already
installed dependencies (`--system-site-packages`) but takes the project itself
only from the wheel, and started from an empty temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from evaluation.live_server import free_port, wait_until_ready
from evaluation.samples import SEVEN_PNG
from tests.conftest import MODEL_NAME, ROOT, SERVED_MODEL, SERVED_VERSION

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SOURCES = [
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
    "service",
    "training",
    "models",
]
# The card of the version the checkout serves (the newest): the one the wheel must carry.
CARD = json.loads((SERVED_MODEL / "model.json").read_text())


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def clean_environment(venv: Path) -> dict[str, str]:
    """No MNIST_* setting, no checkout on the path: only what a fresh shell would have."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MNIST_", "PYTHON", "PROMETHEUS_"))
    }
    environment["PATH"] = f"{venv / 'bin'}:{environment.get('PATH', '')}"
    return environment


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(
                origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "report")
            )
        else:
            shutil.copy2(origin, source / name)
    out = tmp_path_factory.mktemp("dist")
    run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--no-index", "-q", "-w", out, ".",
        cwd=source,
    )  # fmt: skip
    (built,) = out.glob("mnist_serve-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--system-site-packages", folder, cwd=folder)
    run(
        folder / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index",
        "--force-reinstall", "-q", wheel,
        cwd=folder,
    )  # fmt: skip
    yield folder


def test_the_wheel_carries_the_served_model_and_not_the_rest(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    served = CARD["variants"][CARD["serving_variant"]]["file"]
    folder = f"service/model_repository/{MODEL_NAME}/{SERVED_VERSION}"
    assert {f"{folder}/model.json", f"{folder}/{served}"} <= names
    assert f"{folder}/{CARD['file']}" not in names or served == CARD["file"]  # fp32: 4x size
    packaged = {name for name in names if name.startswith("service/model_repository/")}
    assert {name.rsplit("/", 1)[0] for name in packaged} == {folder}  # no older version
    with zipfile.ZipFile(wheel) as archive:  # the checkout's files, not stale copies
        for file in ("model.json", served):
            assert archive.read(f"{folder}/{file}") == (SERVED_MODEL / file).read_bytes(), file
    assert not [name for name in names if "/report/" in name]
    assert "service/static/index.html" in names


def test_installed_mnist_serve_serves_from_any_directory(venv: Path, tmp_path: Path) -> None:
    environment = clean_environment(venv)
    where = run(
        venv / "bin" / "python", "-c", "import service; print(service.__file__)",
        cwd=tmp_path, env=environment,
    )  # fmt: skip
    assert Path(where.strip()).is_relative_to(venv), where  # the wheel's copy, not the checkout
    assert not (tmp_path / "models").exists()

    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [venv / "bin" / "mnist-serve", "--port", str(port)],
            cwd=tmp_path,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(url, process, log)
            answer = httpx.post(
                url + "/v1/predict", files={"file": ("7.png", SEVEN_PNG, "image/png")}, timeout=10
            )
            assert answer.status_code == 200 and answer.json()["digit"] == 7
            (model,) = httpx.get(url + "/v1/models", timeout=10).json()["models"]
            assert model["variant"] == CARD["serving_variant"]
            assert model["version"] == SERVED_VERSION
            assert "/docs-assets/swagger-ui-bundle.js" in httpx.get(url + "/docs", timeout=10).text
        finally:
            process.terminate()
            process.wait(timeout=30)
    loaded = [line for line in log.read_text().splitlines() if '"model loaded"' in line]
    assert loaded and str(venv) in json.loads(loaded[0])["file"]


def test_an_empty_repository_names_the_flag_and_variable(venv: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run(
        [venv / "bin" / "mnist-serve", "--port", "0"],
        cwd=tmp_path,
        env={**clean_environment(venv), "MNIST_MODEL_REPOSITORY": str(empty)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--model-repository" in done.stderr and "MNIST_MODEL_REPOSITORY" in done.stderr
    assert str(empty) in done.stderr
