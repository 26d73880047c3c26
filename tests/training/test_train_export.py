"""End to end on the committed sample: train -> checkpoint -> ONNX -> onnxruntime parity -> card."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation import field
from service.model_card import read_card, sha256_of
from training import __main__ as cli
from training import pipeline
from training.export import check_parity, export_onnx, onnx_predict, quantize_int8, session
from training.model import ModelConfig
from training.train import (
    TrainConfig,
    TrainResult,
    load_checkpoint,
    lr_factor,
    save_checkpoint,
    train,
)

# One thread: the suite shares the CPU with other jobs, where 2 spinning threads crawl.
TINY = TrainConfig(model=ModelConfig(hidden=(64,)), epochs=3, batch_size=50, lr=3e-3, threads=1)


@pytest.fixture(scope="module")
def trained(sample: tuple[np.ndarray, np.ndarray]) -> TrainResult:
    images, labels = sample
    return train(TINY, images[:800], labels[:800], images[800:], labels[800:], progress=False)


def test_quick_training_learns(trained: TrainResult) -> None:
    assert len(trained.history) == 3
    assert trained.history[-1].train_loss < trained.history[0].train_loss
    assert trained.history[trained.best_epoch - 1].val_acc > 0.7  # 800 digits, 3 epochs
    assert not trained.model.training  # handed back in eval mode


def test_training_is_reproducible(sample: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = sample
    config = replace(TINY, epochs=1)
    a = train(config, images[:300], labels[:300], images[300:400], labels[300:400], progress=False)
    b = train(config, images[:300], labels[:300], images[300:400], labels[300:400], progress=False)
    assert a.history[0].val_loss == b.history[0].val_loss


def test_early_stopping_restores_the_best_epoch(sample: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = sample
    # lr 0 and no BN: weights never change, so val loss never improves after epoch 1.
    config = replace(
        TINY,
        model=ModelConfig(hidden=(16,), batchnorm=False),
        lr=0.0,
        epochs=10,
        patience=2,
        schedule="constant",
    )
    result = train(
        config,
        images[:200],
        labels[:200],
        images[200:300],
        labels[200:300],
        log=lambda _: None,
        progress=False,
    )
    assert len(result.history) == 3 and result.best_epoch == 1


def test_time_budget_ends_the_run_annealed(sample: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = sample
    config = replace(TINY, epochs=1000, time_budget=1.0)
    result = train(
        config,
        images[:500],
        labels[:500],
        images[500:600],
        labels[500:600],
        log=lambda _: None,
        progress=False,
    )
    assert 1 <= len(result.history) < 1000
    assert result.seconds < 10.0
    assert result.history[-1].lr < 0.05 * config.lr  # annealed, not cut off at full LR


def test_schedules_warm_up_then_decay() -> None:
    config = replace(TINY, schedule="onecycle", warmup=0.1)
    factors = [lr_factor(config, s / 1000) for s in range(1000)]
    assert factors[0] == pytest.approx(0.04) and max(factors) == pytest.approx(1.0)
    assert factors[-1] < 0.01 and int(np.argmax(factors)) == 100
    cosine = [lr_factor(replace(config, schedule="cosine"), s / 1000) for s in (0, 550, 999)]
    assert cosine[0] == 0.0 and cosine[1] == pytest.approx(0.5, abs=0.01) and cosine[2] < 1e-4


def test_checkpoint_carries_its_config(tmp_path: Path, trained: TrainResult) -> None:
    save_checkpoint(tmp_path / "ckpt.pt", trained)
    model, config = load_checkpoint(tmp_path / "ckpt.pt")
    assert config == trained.config
    x = torch.rand(8, 784)
    torch.testing.assert_close(model(x), trained.model(x))


def test_export_parity_and_int8(
    tmp_path: Path, trained: TrainResult, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = sample
    path = export_onnx(trained.model, tmp_path / "model.onnx")
    assert check_parity(trained.model, path, images) <= 1e-4
    sess = session(path)
    assert [i.name for i in sess.get_inputs()] == ["pixels"]
    assert [o.name for o in sess.get_outputs()] == ["probabilities", "logits"]
    for batch in (1, 7, 1000):  # the batch axis is dynamic
        pixels = images[:batch].reshape(-1, 784).astype(np.float32)
        probs, logits = sess.run(None, {"pixels": pixels})
        assert probs.shape == logits.shape == (batch, 10)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    int8 = quantize_int8(path, tmp_path / "model.int8.onnx")
    assert int8.stat().st_size < path.stat().st_size / 2
    p32, _ = onnx_predict(path, images)
    p8, _ = onnx_predict(int8, images)
    assert (p8.argmax(1) == p32.argmax(1)).mean() > 0.97


def test_bad_parity_fails_the_export(tmp_path: Path, trained: TrainResult) -> None:
    path = export_onnx(trained.model, tmp_path / "model.onnx")
    other = train(
        replace(TINY, epochs=1, seed=5),
        np.zeros((50, 28, 28), np.uint8),
        np.zeros(50, np.uint8),
        np.zeros((10, 28, 28), np.uint8),
        np.zeros(10, np.uint8),
        log=lambda _: None,
        progress=False,
    )
    with pytest.raises(AssertionError, match="parity failed"):
        check_parity(other.model, path, np.random.default_rng(0).integers(0, 256, (100, 784)))


def test_cli_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data-dir", "--out", "--quick", "--hidden", "--optimizer", "--label-smoothing"):
        assert flag in text


def test_cli_quick_run_ships_a_servable_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = sample

    def fake_load(split: str, data_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
        # "train" = the sample repeated (quick mode needs > 1000 images), "test" = the sample.
        return (np.tile(images, (3, 1, 1)), np.tile(labels, 3)) if split == "train" else sample

    monkeypatch.setattr(pipeline, "load_mnist", fake_load)
    out = tmp_path / "models" / "mnist-mlp" / "3"
    cli.main(
        [
            "--quick",
            "--out",
            str(out),
            "--run-dir",
            str(tmp_path / "runs"),
            "--field-n",
            "0",
            "--no-progress",
            "--no-benchmark",
            "--threads",
            "1",
        ]
    )
    card = read_card(out)
    assert (card.name, card.version) == ("mnist-mlp", 3)
    assert card.sha256 == sha256_of(out / "model.onnx")
    assert card.size_bytes == (out / "model.onnx").stat().st_size
    assert card.variants["int8"].sha256 == sha256_of(out / "model.int8.onnx")
    assert card.training["command"].startswith("python -m training --quick")
    assert card.metrics["mnist_test"]["n"] == 1000
    assert json.loads((out / "report" / "mnist_test.json").read_text())["n"] == 1000
    assert {p.name for p in (out / "report").glob("*.png")} == {
        "learning_curves.png",
        "confusion_matrix.png",
        "misclassified.png",
    }
    assert (tmp_path / "runs" / "member0.pt").is_file()


def test_temperature_lives_in_the_exported_softmax(tmp_path: Path, trained: TrainResult) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 784)).astype(np.float32)
    path = export_onnx(trained.model, tmp_path / "model.onnx", temperature=2.0)
    assert check_parity(trained.model, path, pixels, temperature=2.0) < 1e-4
    probabilities, logits = onnx_predict(path, pixels)
    scaled = np.exp(logits / 2.0 - (logits / 2.0).max(axis=1, keepdims=True))
    np.testing.assert_allclose(probabilities, scaled / scaled.sum(axis=1, keepdims=True), atol=1e-5)


def test_cli_records_calibration_and_re_exports_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = sample

    def fake_load(split: str, data_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
        return (np.tile(images, (3, 1, 1)), np.tile(labels, 3)) if split == "train" else sample

    monkeypatch.setattr(pipeline, "load_mnist", fake_load)
    monkeypatch.setattr(field, "held_out_digits", lambda split, data_dir: sample)
    common = ["--no-progress", "--no-benchmark", "--no-int8", "--threads", "1"]
    first, second = tmp_path / "mnist-mlp" / "1", tmp_path / "mnist-mlp" / "2"
    run_dir = str(tmp_path / "runs")
    kinds = str(len(field.KINDS))
    cli.main(["--quick", "--out", str(first), "--run-dir", run_dir, "--field-n", kinds, *common])
    card = read_card(first)
    extra = card.model_extra or {}
    calibration, uncertainty = extra["calibration"], extra["uncertainty"]
    assert calibration["temperature"] > 0
    assert set(calibration["ece"]) == {"field_val", "field_test", "mnist_val", "mnist_test"}
    assert all(set(v) == {"before", "after"} for v in calibration["ece"].values())
    assert 0.0 < uncertainty["min_probability"] <= 1.0
    assert set(uncertainty["effect"]) == {"field_val", "field_test", "mnist_test"}
    assert card.metrics["field_benchmark"]["n"] == len(field.KINDS)

    # the same checkpoints, exported again: no training, the same graph, the first command
    again_args = ["--from-run", run_dir, "--out", str(second), "--val-size", "1000"]
    cli.main([*again_args, "--field-n", kinds, *common])
    again = read_card(second)
    assert again.training["command"] == card.training["command"]
    assert again.training["command"].startswith("python -m training --quick")
    pixels = images[:50].reshape(50, 784).astype(np.float32)
    np.testing.assert_allclose(
        onnx_predict(second / "model.onnx", pixels)[1],
        onnx_predict(first / "model.onnx", pixels)[1],
        atol=1e-5,
    )
