"""Fixtures shared by every test folder."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from evaluation.samples import load_sample
from service.app import create_app
from service.config import Settings
from service.model import list_versions
from service.versions import VersionPolicy

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
MODEL_NAME = "mnist-mlp"
# The version the shipped repository serves by default (the `latest` policy picks the
# newest): derived from the repository, so adding a version or replacing one's files
# changes no test. Tests about a particular version build their own repositories.
(SERVED_VERSION,) = VersionPolicy.latest().select(list_versions(MODELS, MODEL_NAME))
SERVED_MODEL = MODELS / MODEL_NAME / str(SERVED_VERSION)


def pytest_configure(config: pytest.Config) -> None:
    """No test app binds the default gRPC port 8001 (other test runs and servers share this
    machine): gRPC is off unless a test asks for it; `live_server` gives it a free port."""
    os.environ["MNIST_GRPC_PORT"] = "0"


@pytest.fixture(scope="session")
def mnist_sample() -> tuple[np.ndarray, np.ndarray]:
    """The committed 1,000 MNIST test digits: uint8 (1000, 28, 28) and labels (1000,)."""
    return load_sample()


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """Build a TestClient (lifespan running) for given settings overrides."""
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        settings = Settings(model_repository=MODELS, **overrides)  # type: ignore[arg-type]
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
