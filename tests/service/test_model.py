"""Model loading: repository layout, path safety, and the checks against the card."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from service.errors import ModelLoadError
from service.model import OnnxModel, list_versions, resolve_version_dir
from service.model_card import read_card, write_card
from tests.conftest import MODELS


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A private copy of the shipped model as versions 1 and 3 (skipping 2)."""
    for version in (1, 3):
        shutil.copytree(MODELS / "mnist-mlp" / "1", tmp_path / "mnist-mlp" / str(version))
    (tmp_path / "mnist-mlp" / "notes").mkdir()  # not a version: ignored
    return tmp_path


def test_newest_version_is_served_by_default(repository: Path) -> None:
    assert list_versions(repository, "mnist-mlp") == [1, 3]
    assert resolve_version_dir(repository, "mnist-mlp", None).name == "3"
    assert resolve_version_dir(repository, "mnist-mlp", 1).name == "1"


@pytest.mark.parametrize("name", ["../mnist-mlp", "..", "a/b", "/etc", "mnist-mlp/../../x", ""])
def test_names_cannot_escape_the_repository(repository: Path, name: str) -> None:
    with pytest.raises(ModelLoadError):
        resolve_version_dir(repository, name, 1)


def test_symlinked_version_outside_the_repository_is_refused(
    repository: Path, tmp_path: Path
) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    shutil.copytree(repository / "mnist-mlp" / "1", outside)
    (repository / "mnist-mlp" / "7").symlink_to(outside)
    with pytest.raises(ModelLoadError, match="escapes"):
        resolve_version_dir(repository, "mnist-mlp", 7)


def test_missing_model_names_the_folder(repository: Path) -> None:
    with pytest.raises(ModelLoadError, match="no versions of model 'other'"):
        resolve_version_dir(repository, "other", None)
    with pytest.raises(ModelLoadError, match="model card missing"):
        resolve_version_dir(repository, "mnist-mlp", 2)


def test_loads_checks_and_predicts(repository: Path) -> None:
    model = OnnxModel(resolve_version_dir(repository, "mnist-mlp", 1), variant="base")
    model.warm_up(16)
    probabilities = model.predict(np.zeros((3, 784), dtype=np.float32))
    assert probabilities.shape == (3, 10)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert model.info.sha256 == read_card(repository / "mnist-mlp" / "1").sha256
    assert model.info.variant == "base"


def test_the_card_chooses_the_served_variant(repository: Path) -> None:
    version_dir = repository / "mnist-mlp" / "1"
    card = read_card(version_dir)
    assert card.serving_variant == "int8"  # as accurate as fp32 on MNIST test, several times faster
    model = OnnxModel(version_dir)
    assert model.info.variant == "int8"
    assert model.info.sha256 == card.variants["int8"].sha256
    card.serving_variant = None
    write_card(version_dir, card)
    assert OnnxModel(version_dir).info.path.name == "model.onnx"


@pytest.mark.parametrize(("file", "variant"), [("model.onnx", "base"), ("model.int8.onnx", None)])
def test_corrupt_file_is_refused_naming_the_file(
    repository: Path, file: str, variant: str | None
) -> None:
    path = repository / "mnist-mlp" / "1" / file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="does not match its card") as refused:
        OnnxModel(path.parent, variant=variant)
    assert str(path) in str(refused.value)
    assert "\n" not in str(refused.value)


def test_card_signature_must_match_the_graph(repository: Path) -> None:
    version_dir = repository / "mnist-mlp" / "1"
    card = read_card(version_dir)
    card.inputs[0].name = "image"
    write_card(version_dir, card)
    with pytest.raises(ModelLoadError, match="card inputs"):
        OnnxModel(version_dir)


def test_unreadable_card_and_missing_file(repository: Path) -> None:
    version_dir = repository / "mnist-mlp" / "1"
    (version_dir / "model.onnx").unlink()
    with pytest.raises(ModelLoadError, match="model file missing"):
        OnnxModel(version_dir, variant="base")
    (version_dir / "model.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable model card"):
        OnnxModel(version_dir)


def test_variants_are_loaded_by_name(repository: Path) -> None:
    version_dir = repository / "mnist-mlp" / "1"
    card = read_card(version_dir)
    if "int8" in card.variants:
        model = OnnxModel(version_dir, variant="int8")
        assert model.info.path.name == card.variants["int8"].file
    with pytest.raises(ModelLoadError, match="variant 'fp8'"):
        OnnxModel(version_dir, variant="fp8")
