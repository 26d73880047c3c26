"""The model we ship in models/: it matches its card and is accurate on real MNIST digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from evaluation.samples import REPO
from service.model_card import ModelCard, read_card, sha256_of
from training.export import onnx_predict, session

MODEL_ROOT = REPO / "models" / "mnist-mlp"
VERSIONS = sorted((p for p in MODEL_ROOT.glob("*") if p.name.isdigit()), key=lambda p: int(p.name))


@pytest.fixture(scope="module", params=VERSIONS, ids=lambda p: f"v{p.name}")
def version_dir(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


@pytest.fixture(scope="module")
def card(version_dir: Path) -> ModelCard:
    return read_card(version_dir)


def test_a_model_is_shipped() -> None:
    assert VERSIONS, f"no model version under {MODEL_ROOT}"


def test_card_matches_the_file(version_dir: Path, card: ModelCard) -> None:
    path = version_dir / card.file
    assert card.name == "mnist-mlp" and card.version == int(version_dir.name)
    assert card.sha256 == sha256_of(path)
    assert card.size_bytes == path.stat().st_size <= 32 * 1024 * 1024
    assert card.classes == [str(c) for c in range(10)]
    sess = session(path)
    assert [(t.name, t.shape) for t in card.inputs] == [("pixels", [-1, 784])]
    assert [(t.name, t.shape) for t in card.outputs] == [
        ("probabilities", [-1, 10]),
        ("logits", [-1, 10]),
    ]
    assert all(t.datatype == "FP32" for t in card.inputs + card.outputs)
    assert [i.name for i in sess.get_inputs()] == ["pixels"]
    assert sess.get_inputs()[0].type == "tensor(float)"
    assert sess.get_inputs()[0].shape[1] == 784 and isinstance(sess.get_inputs()[0].shape[0], str)
    assert [o.name for o in sess.get_outputs()] == ["probabilities", "logits"]
    onnx.checker.check_model(onnx.load(str(path)))


def test_card_records_how_it_was_made(card: ModelCard) -> None:
    assert card.training["command"].startswith("python -m training")
    assert card.training["torch_version"].startswith("2.")
    assert card.training["seconds"] > 0
    assert len(card.data["md5_uncompressed"]) == 4
    assert card.metrics["mnist_test"]["n"] == 10000
    assert 0.0 < card.metrics["mnist_test"]["macro_f1"] <= 1.0


def test_variants_match_their_files(version_dir: Path, card: ModelCard) -> None:
    for variant in card.variants.values():
        path = version_dir / variant.file
        assert variant.sha256 == sha256_of(path)
        assert variant.size_bytes == path.stat().st_size
        assert variant.metrics["mnist_test"]["n"] == 10000


def test_scores_at_least_99_percent_on_the_sample(
    version_dir: Path, card: ModelCard, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = sample
    probs, logits = onnx_predict(version_dir / card.file, images)
    assert (probs.argmax(1) == labels).mean() >= 0.99
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == logits.argmax(1)).all()
    for variant in card.variants.values():
        probs8, _ = onnx_predict(version_dir / variant.file, images)
        assert (probs8.argmax(1) == labels).mean() >= 0.99
