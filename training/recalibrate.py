"""Calibrate a shipped model version without its checkpoints: a new version, same weights.

    python -m training.recalibrate --from models/mnist-mlp/1 --out models/mnist-mlp/2 \\
        --data-dir ../shared/data/mnist --real-set data/real

reads the source version's ONNX files (checked against its card), fits the softmax
temperature T on the field benchmark's validation renders exactly as a training run
does (`training.pipeline.calibration_record`, `training.calibrate`), and writes a
new version whose graphs are the source graphs with one Mul by 1/T inserted before
the Softmax: `probabilities = softmax(logits / T)`, the `logits` output unchanged,
so no answer changes. The int8 file gets the same edit (it is not re-quantized).
Then everything is measured again as training measures it (`training.pipeline.measure`:
MNIST val/test, the field benchmark's val and test renders, the real set, ECE
before/after, the uncertain rule fitted on the field validation renders), the report
pictures are drawn and the card is written. An already calibrated source has its
temperature replaced, not stacked: T is always fitted on the raw `logits` output.

From Python::

    edited = apply_temperature(onnx.load(path), temperature)   # an onnx.ModelProto
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from service.model_card import ModelCard, read_card, sha256_of
from training.calibrate import softmax
from training.card import build_card, parse_version_dir, save_card
from training.data import load_mnist, resolve_data_dir, train_val_split
from training.export import OUTPUT_NAMES, PARITY_TOLERANCE, onnx_predict
from training.pipeline import calibration_record, field_split, measure, throughput

PROBABILITIES, LOGITS = OUTPUT_NAMES
INVERSE_TEMPERATURE = "inverse_temperature"  # the scalar initializer the Mul reads
SCALED_LOGITS = "scaled_logits"
LOGITS_TOLERANCE = 1e-6  # the edit leaves the logits' nodes alone: they should not move
FP32_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"  # the names `training.card` expects
# Flags whose absolute (scratch) paths a card must not carry: shown as these names
PATH_PLACEHOLDERS = {
    "--data-dir": "DATA_DIR",
    "--out": "OUT",
    "--run-dir": "RUN_DIR",
    "--from-run": "RUN_DIR",
    "--real-set": "REAL_SET",
    "--from": "SOURCE",
}


def apply_temperature(model: onnx.ModelProto, temperature: float) -> onnx.ModelProto:
    """A copy of `model` whose Softmax reads `logits * (1 / temperature)`.

    The graph must output `logits` and `probabilities = Softmax(logits)`, or
    `Softmax(Mul(logits, scalar))` (a calibrated graph: its scalar is replaced).
    Everything else (weights, opsets, metadata, the `logits` output) stays as it was.
    """
    if not temperature > 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    graph = edited.graph
    outputs = [o.name for o in graph.output]
    if PROBABILITIES not in outputs or LOGITS not in outputs:
        raise ValueError(f"graph outputs {outputs}: need {PROBABILITIES!r} and {LOGITS!r}")
    softmaxes = [n for n in graph.node if n.op_type == "Softmax" and PROBABILITIES in n.output]
    if len(softmaxes) != 1:
        raise ValueError(f"expected one Softmax producing {PROBABILITIES!r}")
    softmax_node = softmaxes[0]
    scale = numpy_helper.from_array(np.array(1.0 / temperature, dtype=np.float32))
    initializers = {init.name: init for init in graph.initializer}
    feeding = softmax_node.input[0]
    if feeding == LOGITS:  # uncalibrated: insert the Mul
        taken = {*initializers, *(name for n in graph.node for name in n.output)}
        if INVERSE_TEMPERATURE in taken or SCALED_LOGITS in taken:
            raise ValueError(f"graph already has {INVERSE_TEMPERATURE!r} or {SCALED_LOGITS!r}")
        scale.name = INVERSE_TEMPERATURE
        graph.initializer.append(scale)
        multiply = onnx.helper.make_node(
            "Mul",
            [LOGITS, INVERSE_TEMPERATURE],
            [SCALED_LOGITS],
            name="calibration_temperature",
            doc_string=f"softmax temperature {temperature:.6g}: probabilities = "
            "softmax(logits / temperature)",
        )
        softmax_node.input[0] = SCALED_LOGITS
        nodes = list(graph.node)  # (extend copies: edit the nodes before)
        nodes.insert(nodes.index(softmax_node), multiply)
        del graph.node[:]
        graph.node.extend(nodes)
        return edited
    producers = [n for n in graph.node if feeding in n.output]
    scaling = producers[0] if len(producers) == 1 else None
    if scaling is None or scaling.op_type != "Mul" or LOGITS not in scaling.input:
        raise ValueError(f"the Softmax reads {feeding!r}: neither {LOGITS!r} nor a scaled copy")
    factor = next(name for name in scaling.input if name != LOGITS)
    old = initializers.get(factor)
    if old is None or numpy_helper.to_array(old).size != 1:
        raise ValueError(f"the Mul before the Softmax scales by {factor!r}, not a scalar constant")
    scale.name = factor
    old.CopyFrom(scale)
    return edited


def check_edit(
    source: Path, edited: Path, pixels: np.ndarray, temperature: float
) -> dict[str, float]:
    """The edited file against its source on `pixels`: same logits, probabilities equal to
    softmax(source logits / T), same answers. Raises when they are not; returns the diffs."""
    source_probabilities, source_logits = onnx_predict(source, pixels)
    probabilities, logits = onnx_predict(edited, pixels)
    logits_diff = float(np.abs(logits - source_logits).max())
    expected = softmax(source_logits.astype(np.float64) / temperature)
    probabilities_diff = float(np.abs(probabilities - expected).max())
    changed = int((probabilities.argmax(1) != source_probabilities.argmax(1)).sum())
    if logits_diff > LOGITS_TOLERANCE or probabilities_diff > PARITY_TOLERANCE or changed:
        raise AssertionError(
            f"{edited.name}: logits differ by {logits_diff:.2e}, probabilities by "
            f"{probabilities_diff:.2e} from softmax(logits / T), {changed} answers changed"
        )
    return {"logits": logits_diff, "probabilities": round(probabilities_diff, 9)}


def portable_command(command: str) -> tuple[str, bool]:
    """`command` with absolute paths replaced by placeholders (DATA_DIR, OUT, ...), and
    whether any was: a card records how to repeat a run, not one machine's scratch folders."""
    words = shlex.split(command)
    replaced = False
    for i, word in enumerate(words):
        flag, equals, value = word.partition("=") if word.startswith("--") else ("", "", word)
        if not Path(value).is_absolute():
            continue
        flag = flag if equals else (words[i - 1] if i else "")
        placeholder = PATH_PLACEHOLDERS.get(flag, "PATH")
        words[i] = f"{flag}={placeholder}" if equals else placeholder
        replaced = True
    return shlex.join(words), replaced


def first_member_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The epochs of the first ensemble member (a card lists every member's, one after another)."""
    for i in range(1, len(history)):
        if history[i]["epoch"] <= history[i - 1]["epoch"]:
            return history[:i]
    return history


@dataclass
class RecalibrateOptions:
    source: Path  # models/<name>/<version> to take the weights from
    out: Path  # models/<name>/<new version>
    data_dir: Path | None = None
    field_n: int = 1800  # digits rendered per field benchmark split (100 per kind)
    real_set: Path | None = None  # built real set (manifest.csv), scored into the card
    benchmark: bool = True  # measure raw onnxruntime throughput into the card
    command: str = ""


def source_files(source: Path, card: ModelCard) -> list[Path]:
    """The source version's fp32 file and int8 variant (if any), checked against its card."""
    files = [(card.file, card.sha256)]
    for key, variant in card.variants.items():
        if key != "int8" or variant.file != INT8_FILE:
            raise ValueError(f"{source}: unsupported variant {key!r} ({variant.file})")
        files.append((variant.file, variant.sha256))
    if card.file != FP32_FILE:
        raise ValueError(f"{source}: the card's file is {card.file!r}, expected {FP32_FILE!r}")
    for name, digest in files:
        if sha256_of(source / name) != digest:
            raise ValueError(f"{source / name}: sha256 differs from its card")
    return [source / name for name, _ in files]


def recalibrate(options: RecalibrateOptions, log: Callable[[str], None] = print) -> Path:
    started = time.perf_counter()
    source, out = options.source, options.out
    name, version = parse_version_dir(out)
    source_name, source_version = parse_version_dir(source)
    if out.resolve() == source.resolve():
        raise ValueError("--out must be a new version folder, not the source")
    source_card = read_card(source)
    if (source_card.name, source_card.version) != (source_name, source_version):
        raise ValueError(f"{source}: card says {source_card.name} v{source_card.version}")
    paths = source_files(source, source_card)

    data_dir = resolve_data_dir(options.data_dir)
    split = source_card.data.get("val_split", {"size": 5000, "seed": 0})
    images, labels = load_mnist("train", data_dir)
    _, val_idx = train_val_split(len(labels), int(split["size"]), seed=int(split["seed"]))
    mnist_val = (images[val_idx], labels[val_idx])
    mnist_test = load_mnist("test", data_dir)
    field_val = field_split("val", options.field_n, data_dir) if options.field_n else None
    field_test = field_split("test", options.field_n, data_dir) if options.field_n else None
    if field_val is None:
        raise ValueError("the temperature is fitted on the field benchmark: --field-n must be > 0")

    # Fit T on the source's raw logits of the validation renders, as training does
    _, val_logits = onnx_predict(paths[0], field_val.rows[field_val.ok])
    source_text = f"field benchmark validation renders ({int(field_val.ok.sum())} files)"
    temperature, calibration = calibration_record(
        val_logits, field_val.labels[field_val.ok], source_text
    )
    log(f"calibration: temperature {temperature:.4f} ({source_text}), ECE {calibration['ece']}")

    out.mkdir(parents=True, exist_ok=True)
    written, diffs = [], {}
    for path in paths:
        target = out / path.name
        onnx.save(apply_temperature(onnx.load(str(path)), temperature), str(target))
        onnx.checker.check_model(onnx.load(str(target)), full_check=True)
        diffs[target.name] = check_edit(path, target, mnist_test[0][:4000], temperature)
        log(f"wrote {target}: {diffs[target.name]} max abs diff from the source")
        written.append(target)
    int8_path = written[1] if len(written) > 1 else None

    history = first_member_history(list(source_card.training.get("history", [])))
    measured = measure(
        written[0],
        int8_path,
        temperature=temperature,
        calibration=calibration,
        mnist_val=mnist_val,
        mnist_test=mnist_test,
        field_val=field_val,
        field_test=field_test,
        real_set=options.real_set,
        report_dir=out / "report",
        history=history,
        log=log,
    )

    training = dict(source_card.training)
    command, replaced = portable_command(str(training.get("command", "")))
    training["command"] = command
    if replaced:
        training["command_paths"] = "absolute paths of the original run shown as placeholders"
    provenance = {
        "weights": f"{source_name} version {source_version}, unchanged (not retrained); "
        "`training` is the run that made them",
        "source": {
            "version": source_version,
            "sha256": {p.name: sha256_of(p) for p in paths},
        },
        "edit": "a Mul by 1/temperature inserted before the Softmax of each file (the int8 "
        "file edited, not re-quantized); the logits output is the source's",
        "edit_max_abs_diff": diffs,
        "command": options.command,
        "seconds": round(time.perf_counter() - started, 1),
        "onnx_version": onnx.__version__,
        "onnxruntime_version": ort.__version__,
    }
    card = build_card(
        out,
        description=f"{source_card.description}; the weights of version {source_version}, "
        "softmax temperature fitted on validation data",
        metrics=measured.metrics,
        training=training,
        data=dict(source_card.data),
        int8_metrics=measured.int8_metrics,
        extra={
            "calibration": measured.calibration,
            **({"uncertainty": measured.uncertainty} if measured.uncertainty else {}),
            "provenance": provenance,
            **({"benchmark": throughput(written, log)} if options.benchmark else {}),
        },
    )
    if (card.name, card.version) != (name, version):  # build_card reads the folder name
        raise AssertionError(f"card for {card.name} v{card.version}, expected {name} v{version}")
    card_path = save_card(out, card)
    log(f"served variant: {card.serving_variant or 'fp32'}; wrote {card_path}")
    return card_path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.recalibrate",
        description="New model version = a shipped version's weights with a softmax "
        "temperature fitted on validation data; re-measured, with its card.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--from", dest="source", type=Path, required=True, help="source version folder"
    )
    parser.add_argument("--out", type=Path, required=True, help="new version folder")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="MNIST IDX files (default: $MNIST_DATA_DIR, else ~/.cache/mnist-serve/mnist)",
    )
    parser.add_argument(
        "--field-n", type=int, default=1800, help="digits rendered per field benchmark split"
    )
    parser.add_argument(
        "--real-set", type=Path, default=None, help="built real set (evaluation/realset) to score"
    )
    parser.add_argument(
        "--no-benchmark", action="store_true", help="skip the raw onnxruntime throughput"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    options = RecalibrateOptions(
        source=args.source,
        out=args.out,
        data_dir=args.data_dir,
        field_n=args.field_n,
        real_set=args.real_set,
        benchmark=not args.no_benchmark,
        command=shlex.join(["python", "-m", "training.recalibrate", *argv]),
    )
    try:
        recalibrate(options)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
