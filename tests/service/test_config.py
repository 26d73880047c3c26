"""Settings: environment variables, bounds, keys, and the CLI built from them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings
from tests.conftest import ROOT


def test_environment_variables_set_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_MAX_BATCH_SIZE", "128")
    monkeypatch.setenv("MNIST_BATCHING", "false")
    monkeypatch.setenv("MNIST_API_KEYS", " k1 ,k2,, ")
    settings = Settings()
    assert settings.max_batch_size == 128
    assert settings.batching is False
    assert settings.load_api_keys() == ["k1", "k2"]
    assert "k1" not in repr(settings)  # keys are secrets: never printed


def test_keys_file_adds_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nalpha\n\n  beta  \n")
    assert Settings(api_keys_file=keys).load_api_keys() == ["alpha", "beta"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_batch_size", 0),
        ("max_queue_delay_ms", -1),
        ("request_timeout_s", 0),
        ("model_name", "../etc"),
        ("model_name", "a/b"),
        ("model_version", 0),
        ("low_confidence_threshold", 1.5),
    ],
)
def test_out_of_bounds_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value})  # type: ignore[arg-type]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_lists_settings_as_flags() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in [
        "--port",
        "--workers",
        "--max-batch-size",
        "--max-queue-delay-ms",
        "--api-keys-file",
    ]:
        assert flag in result.stdout


def test_missing_model_fails_startup_with_one_line(tmp_path: Path) -> None:
    result = run_cli("--model-repository", str(tmp_path), "--port", "0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "no versions of model 'mnist-mlp'" in lines[0] and str(tmp_path) in lines[0]
