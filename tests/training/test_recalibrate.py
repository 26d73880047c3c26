"""training.recalibrate: a shipped version's graphs with a fitted softmax temperature.

The edit leaves the logits and every answer alone and makes the probabilities
softmax(logits / T); T fitted on validation logits lowers their NLL; the new
version's card is complete, portable and accepted by the service. On the shipped
version 1 files and the committed 1,000-digit sample: no network, no full MNIST.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from evaluation import field
from evaluation.samples import REPO
from service.model import OnnxModel
from service.model_card import read_card, sha256_of
from service.uncertainty import card_recommendation
from tests.conftest import png_bytes
from training import recalibrate as rc
from training.calibrate import expected_calibration_error, nll, softmax
from training.export import onnx_predict
from training.pipeline import calibration_record

SOURCE = REPO / "models" / "mnist-mlp" / "1"
FILES = ("model.onnx", "model.int8.onnx")


def edited_copy(name: str, temperature: float, folder: Path) -> Path:
    path = folder / name
    onnx.save(rc.apply_temperature(onnx.load(str(SOURCE / name)), temperature), str(path))
    return path


@pytest.mark.parametrize("name", FILES)
def test_edited_graph_is_softmax_of_the_source_logits_over_t(
    name: str, tmp_path: Path, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = sample
    path = edited_copy(name, 1.7, tmp_path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    source_probabilities, source_logits = onnx_predict(SOURCE / name, images)
    probabilities, logits = onnx_predict(path, images)
    np.testing.assert_array_equal(logits, source_logits)  # the logits output stays raw
    np.testing.assert_allclose(probabilities, softmax(source_logits / 1.7), atol=1e-6)
    assert (probabilities.argmax(1) == source_probabilities.argmax(1)).all()
    assert probabilities.max(1).mean() < source_probabilities.max(1).mean()  # T > 1: less sure
    # the serving contract: the same inputs and outputs, one Mul more
    source_graph, graph = onnx.load(str(SOURCE / name)).graph, onnx.load(str(path)).graph
    assert graph.input == source_graph.input and graph.output == source_graph.output
    assert [n.op_type for n in graph.node] == [
        *[n.op_type for n in source_graph.node][:-1],
        "Mul",
        "Softmax",
    ]
    assert rc.check_edit(SOURCE / name, path, images[:100], 1.7)["probabilities"] < 1e-5


def test_a_calibrated_graph_gets_its_temperature_replaced_not_stacked(
    tmp_path: Path, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    images = sample[0][:200]
    once = edited_copy("model.int8.onnx", 1.7, tmp_path)
    twice = tmp_path / "twice.onnx"
    onnx.save(rc.apply_temperature(onnx.load(str(once)), 0.5), str(twice))
    assert [n.op_type for n in onnx.load(str(twice)).graph.node].count("Mul") == sum(
        n.op_type == "Mul" for n in onnx.load(str(SOURCE / "model.int8.onnx")).graph.node
    ) + 1
    _, logits = onnx_predict(SOURCE / "model.int8.onnx", images)
    np.testing.assert_allclose(onnx_predict(twice, images)[0], softmax(logits / 0.5), atol=1e-6)


def tiny_graph(outputs: tuple[str, ...] = ("probabilities", "logits")) -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.ones((784, 10), np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["pixels", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 784])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["batch", 10]) for o in outputs],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_graphs_outside_the_serving_contract_are_refused() -> None:
    with pytest.raises(ValueError, match="logits"):
        rc.apply_temperature(tiny_graph(("probabilities",)), 1.5)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            rc.apply_temperature(tiny_graph(), bad)
    edited = rc.apply_temperature(tiny_graph(), 2.0)
    onnx.checker.check_model(edited, full_check=True)
    source = tiny_graph()
    assert source.graph.node[1].input[0] == "logits"  # the source is left alone


def test_temperature_fitted_on_validation_lowers_nll(
    sample: tuple[np.ndarray, np.ndarray],
) -> None:
    # The shipped graph's logits of the sample, made overconfident (x3) so that the
    # fit has something to correct; the first half stands for validation.
    images, labels = sample
    _, raw = onnx_predict(SOURCE / "model.onnx", images)
    logits, targets = raw.astype(np.float64) * 3.0, labels.astype(np.int64)
    val, held_out = slice(0, 500), slice(500, 1000)
    temperature, record = calibration_record(logits[val], targets[val], "half the sample")
    assert temperature > 1.0
    assert nll(logits[val], targets[val], temperature) < nll(logits[val], targets[val])
    assert nll(logits[held_out], targets[held_out], temperature) < nll(
        logits[held_out], targets[held_out]
    )
    after = expected_calibration_error(softmax(logits[val] / temperature), targets[val])
    assert record["ece"]["field_val"]["after"] == round(after, 5)
    assert (record["temperature"], record["fitted_on"]) == (
        round(temperature, 4),
        "half the sample",
    )


def test_portable_command_hides_absolute_paths() -> None:
    command = "python -m training --data-dir /work/data --out=/tmp/x/1 --run-dir runs/a --epochs 3"
    assert rc.portable_command(command) == (
        "python -m training --data-dir DATA_DIR --out=OUT --run-dir runs/a --epochs 3",
        True,
    )
    assert rc.portable_command("python -m training --out models/m/2") == (
        "python -m training --out models/m/2",
        False,
    )


def real_set(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """A tiny built real set: dark digits on light paper, as evaluation.realset writes it."""
    folder.mkdir(parents=True)
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "file", "label", "style", "source", "notes"])
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            (folder / f"r{i:04d}.png").write_bytes(png_bytes(255 - image))
            style = "scan" if i % 2 else "canvas"
            writer.writerow([f"r{i:04d}", f"r{i:04d}.png", int(label), style, "test/x", ""])
    return folder


def test_recalibrate_writes_a_complete_portable_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = sample
    repository = tmp_path / "models" / "mnist-mlp"
    shutil.copytree(SOURCE, repository / "1", ignore=shutil.ignore_patterns("report"))
    real_set(tmp_path / "real", images[:20], labels[:20])

    def fake_load(split: str, data_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
        return (np.tile(images, (6, 1, 1)), np.tile(labels, 6)) if split == "train" else sample

    monkeypatch.setattr(rc, "load_mnist", fake_load)
    monkeypatch.setattr(field, "held_out_digits", lambda split, data_dir: sample)
    monkeypatch.chdir(tmp_path)
    kinds = str(len(field.KINDS))
    args = ["--from", "models/mnist-mlp/1", "--out", "models/mnist-mlp/2", "--field-n", kinds]
    assert rc.main([*args, "--real-set", "real", "--no-benchmark"]) == 0

    out = repository / "2"
    card = read_card(out)
    extra = card.model_extra or {}
    assert (card.name, card.version, card.serving_variant) == ("mnist-mlp", 2, "int8")
    assert card.sha256 == sha256_of(out / "model.onnx")
    assert card.variants["int8"].sha256 == sha256_of(out / "model.int8.onnx")
    assert [t.name for t in card.outputs] == ["probabilities", "logits"]
    for metrics in (card.metrics, card.variants["int8"].metrics):
        assert {"mnist_test", "field_benchmark_val", "field_benchmark", "real_set"} <= set(metrics)
        assert metrics["field_benchmark"]["n"] == len(field.KINDS)
        assert metrics["real_set"]["counts"] == {"canvas": 10, "scan": 10}
    assert card.metrics["mnist_test"]["n"] == 1000 and "mnist_val" in card.metrics

    calibration = extra["calibration"]
    assert set(calibration["ece"]) == {
        "field_val",
        "field_test",
        "mnist_val",
        "mnist_test",
        "real_set",
    }
    temperature = calibration["temperature"]
    assert temperature > 0 and calibration["applied"].startswith("in the graph")
    uncertainty = extra["uncertainty"]
    assert set(uncertainty["effect"]) == {"field_val", "field_test", "mnist_test", "real_set"}
    assert card_recommendation(card) == (uncertainty["min_probability"], 0.0)

    provenance = extra["provenance"]
    assert provenance["command"] == "python -m training.recalibrate " + " ".join(
        [*args, "--real-set", "real", "--no-benchmark"]
    )
    assert provenance["source"]["version"] == 1
    assert provenance["source"]["sha256"]["model.onnx"] == sha256_of(SOURCE / "model.onnx")
    assert "benchmark" not in extra and "measured_by" not in card.training
    assert card.training["command"].startswith("python -m training ")
    assert card.training["history"] == read_card(SOURCE).training["history"]
    text = (out / "model.json").read_text()
    assert str(tmp_path) not in text and "/tmp/" not in text and "/work/" not in text
    assert json.loads(text)["data"] == read_card(SOURCE).data
    assert {p.name for p in (out / "report").iterdir()} == {
        "mnist_test.json",
        "learning_curves.png",
        "confusion_matrix.png",
        "misclassified.png",
    }

    # the service loads it, and serves the calibrated probabilities of version 1's logits
    served = OnnxModel(out)
    assert served.info.variant == "int8"
    rows = images[:50].reshape(50, 784).astype(np.float32)
    _, logits = onnx_predict(SOURCE / "model.int8.onnx", rows)
    scale = {i.name: i for i in onnx.load(str(out / "model.int8.onnx")).graph.initializer}
    inverse = float(numpy_helper.to_array(scale[rc.INVERSE_TEMPERATURE]))
    assert inverse == pytest.approx(1.0 / temperature, rel=1e-4)  # the card's T is rounded
    np.testing.assert_allclose(served.predict(rows), softmax(logits * inverse), atol=1e-6)


def test_the_source_must_match_its_card(tmp_path: Path) -> None:
    source = tmp_path / "mnist-mlp" / "1"
    shutil.copytree(SOURCE, source, ignore=shutil.ignore_patterns("report"))
    (source / "model.int8.onnx").write_bytes(b"not the file")
    options = rc.RecalibrateOptions(source=source, out=tmp_path / "mnist-mlp" / "2")
    with pytest.raises(ValueError, match="sha256"):
        rc.recalibrate(options, log=lambda _: None)
    with pytest.raises(ValueError, match="new version"):
        rc.recalibrate(rc.RecalibrateOptions(source=source, out=source), log=lambda _: None)
