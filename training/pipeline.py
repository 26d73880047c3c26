"""One end-to-end run: data -> train (1..N members) -> ONNX + int8 -> evaluate -> report + card.

Called by `python -m training` (see training/__main__.py for the flags).
The test set is touched only here, after training, for the reported numbers;
model choices use the validation split.
"""

from __future__ import annotations

import csv
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation import field
from training import plots
from training.benchmark import benchmark
from training.calibrate import (
    ECE_BINS,
    expected_calibration_error,
    fit_temperature,
    rule_effect,
    softmax,
    uncertainty_rule,
)
from training.card import build_card, save_card
from training.data import file_md5s, load_mnist, resolve_data_dir, train_val_split
from training.evaluate import classification_report, format_table, summary, write_report
from training.export import check_parity, export_onnx, onnx_predict, quantize_int8
from training.model import Ensemble, ServingGraph
from training.train import TrainConfig, TrainResult, load_result, save_checkpoint, train

UNCERTAIN_TARGET_ACCURACY = 0.995  # answers above the uncertain threshold: right this often


@dataclass
class RunOptions:
    out: Path  # models/<name>/<version>
    data_dir: Path | None = None
    run_dir: Path = Path("runs")  # checkpoints (not shipped)
    members: int = 1  # >1: an ensemble of independently seeded MLPs, exported as one graph
    val_size: int = 5000
    train_limit: int | None = None  # use only the first N training images (--quick)
    int8: bool = True
    field_n: int = 1800  # digits rendered for the field benchmark (0: skip); 100 per kind
    command: str = ""
    from_run: Path | None = None  # re-export the checkpoints of an earlier run instead of training
    real_set: Path | None = None  # a folder with manifest.csv (id,file,label,style,...) to score
    progress: bool = True
    benchmark: bool = True  # measure raw onnxruntime throughput into the card


@dataclass
class FieldSplit:
    """The field benchmark's renders of one split, preprocessed once for every model file."""

    split: str
    samples: list[field.FieldSample]
    rows: np.ndarray  # (n, 784) what the model sees
    ok: np.ndarray  # False where the service refuses the file (scored as wrong)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)


def field_split(split: str, n: int, data_dir: Path | None) -> FieldSplit:
    images, labels = field.held_out_digits(split, data_dir)
    samples = field.render_field_set(images[:n], labels[:n], seed=0)
    rows, ok = field.preprocess_files([s.data for s in samples])
    return FieldSplit(split, samples, rows, ok)


def field_metrics(data: FieldSplit, probabilities: np.ndarray) -> dict[str, Any]:
    """Field-benchmark accuracy (evaluation/field.py), overall and per kind."""
    predicted = np.where(data.ok, probabilities.argmax(axis=1), -1)
    report = field.score(lambda files: predicted, data.samples)
    return {
        "split": data.split,
        "n": report.n,
        "accuracy": report.accuracy,
        "per_kind": report.per_kind,
    }


@dataclass
class RealSet:
    """People's own digits (`python -m evaluation.realset build` writes them with a
    manifest.csv: id, file, label, style, ...), preprocessed once for every model file."""

    labels: np.ndarray
    styles: np.ndarray
    rows: np.ndarray
    ok: np.ndarray

    @classmethod
    def load(cls, folder: Path) -> RealSet:
        with (folder / "manifest.csv").open(newline="") as handle:
            entries = list(csv.DictReader(handle))
        files = [(folder / entry["file"]).read_bytes() for entry in entries]
        rows, ok = field.preprocess_files(files)
        labels = np.array([int(entry["label"]) for entry in entries], dtype=np.int64)
        return cls(labels, np.array([entry["style"] for entry in entries]), rows, ok)

    def metrics(self, probabilities: np.ndarray) -> dict[str, Any]:
        correct = self.ok & (probabilities.argmax(axis=1) == self.labels)
        styles = sorted(set(self.styles.tolist()))
        return {
            "n": int(self.labels.size),
            "accuracy": float(correct.mean()),
            "per_style": {s: float(correct[self.styles == s].mean()) for s in styles},
            "counts": {s: int((self.styles == s).sum()) for s in styles},
            "refused": int((~self.ok).sum()),
        }


@torch.no_grad()
def torch_logits(model: torch.nn.Module, rows: np.ndarray) -> np.ndarray:
    """Logits of raw 0..255 pixel rows (n, 784) from the trained (unexported) model."""
    model.eval()
    graph = ServingGraph(model)
    pixels = torch.from_numpy(np.ascontiguousarray(rows.reshape(len(rows), 784), np.float32))
    return np.concatenate(
        [graph(pixels[i : i + 2000])[1].numpy() for i in range(0, len(rows), 2000)]
    )


def calibrate(
    model: torch.nn.Module, fitted_on: FieldSplit | None, mnist_val: tuple[np.ndarray, np.ndarray]
) -> tuple[float, dict[str, Any]]:
    """Temperature fitted on validation data, with ECE before and after (`training.calibrate`).

    Fitted on the field benchmark's validation renders (MNIST validation digits drawn
    as uploads and preprocessed by the service) when there are any: that is what the
    service sees; else on the clean MNIST validation digits.
    """
    if fitted_on is not None:
        logits, labels = (
            torch_logits(model, fitted_on.rows[fitted_on.ok]),
            fitted_on.labels[fitted_on.ok],
        )
        source = f"field benchmark validation renders ({len(labels)} files)"
    else:
        logits, labels = torch_logits(model, mnist_val[0]), mnist_val[1].astype(np.int64)
        source = f"MNIST validation digits ({len(labels)})"
    return calibration_record(logits, labels, source)


def calibration_record(
    logits: np.ndarray, labels: np.ndarray, source: str
) -> tuple[float, dict[str, Any]]:
    """The temperature fitted on these validation logits, and the card's `calibration` section
    (ECE on them before and after; `source` says what they are)."""
    temperature = fit_temperature(logits, labels)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits / temperature), labels)
    return temperature, {
        "temperature": round(temperature, 4),
        "applied": "in the graph: probabilities = softmax(logits / temperature)",
        "fitted_on": source,
        "ece_bins": ECE_BINS,
        "ece": {"field_val": {"before": round(before, 5), "after": round(after, 5)}},
    }


def ece_before_after(
    logits: np.ndarray, labels: np.ndarray, temperature: float
) -> dict[str, float]:
    return {
        "before": round(expected_calibration_error(softmax(logits), labels), 5),
        "after": round(expected_calibration_error(softmax(logits / temperature), labels), 5),
    }


@dataclass
class Measured:
    """What `measure` found: the card's metrics, calibration and uncertain rule."""

    metrics: dict[str, Any]
    int8_metrics: dict[str, Any] | None
    calibration: dict[str, Any]
    uncertainty: dict[str, Any]  # empty without field benchmark renders


def measure(
    onnx_path: Path,
    int8_path: Path | None,
    *,
    temperature: float,
    calibration: dict[str, Any],
    mnist_val: tuple[np.ndarray, np.ndarray],
    mnist_test: tuple[np.ndarray, np.ndarray],
    field_val: FieldSplit | None,
    field_test: FieldSplit | None,
    real_set: Path | None,
    report_dir: Path,
    history: list[dict[str, Any]],
    log: Callable[[str], None] = print,
) -> Measured:
    """Score the exported files (fp32 and int8) for the card and draw the report pictures.

    MNIST validation and test, the field benchmark's val and test renders and the
    real set (when given) through onnxruntime; ECE before/after `temperature` on
    each (fp32 logits); the uncertain rule chosen on the field validation renders
    and its effect elsewhere. Adds to `calibration` (the `calibrate` record).
    """
    val_images, val_labels = mnist_val
    test_images, test_labels = mnist_test
    val_probs, val_logits = onnx_predict(onnx_path, val_images)
    val_acc = float((val_probs.argmax(1) == val_labels).mean())
    probs, test_logits = onnx_predict(onnx_path, test_images)
    predictions = probs.argmax(1)
    report = classification_report(test_labels, predictions)
    log(format_table(report))
    calibration["ece"]["mnist_val"] = ece_before_after(val_logits, val_labels, temperature)
    calibration["ece"]["mnist_test"] = ece_before_after(test_logits, test_labels, temperature)

    write_report(report_dir / "mnist_test.json", report)
    if history:  # epochs of the run that made the weights
        plots.learning_curves(history, report_dir / "learning_curves.png")
    cm_path = report_dir / "confusion_matrix.png"
    plots.confusion_plot(report["confusion_matrix"], cm_path, "MNIST test")
    plots.misclassified_grid(
        test_images, test_labels, predictions, probs.max(1), report_dir / "misclassified.png"
    )

    metrics: dict[str, Any] = {"mnist_test": summary(report), "mnist_val": {"accuracy": val_acc}}
    int8_metrics: dict[str, Any] | None = None
    if int8_path is not None:
        int8_probs, _ = onnx_predict(int8_path, test_images)
        int8_report = classification_report(test_labels, int8_probs.argmax(1))
        int8_metrics = {"mnist_test": summary(int8_report)}
        log(
            f"int8: test accuracy {int8_metrics['mnist_test']['accuracy']:.4f}, "
            f"{int8_path.stat().st_size / 1e6:.2f} MB"
        )

    paths = [onnx_path] if int8_path is None else [onnx_path, int8_path]
    uncertainty: dict[str, Any] = {}
    for data in (field_val, field_test):
        if data is None:
            continue
        key = "field_benchmark" if data.split == "test" else "field_benchmark_val"
        scored = []
        for path in paths:
            path_probs, path_logits = onnx_predict(path, data.rows)
            scored.append(field_metrics(data, path_probs))
            if path == onnx_path:
                ok_labels = data.labels[data.ok]
                calibration["ece"][f"field_{data.split}"] = ece_before_after(
                    path_logits[data.ok], ok_labels, temperature
                )
                if data.split == "val":  # the rule is chosen on validation data only
                    uncertainty = uncertainty_rule(
                        path_probs[data.ok], ok_labels, target_accuracy=UNCERTAIN_TARGET_ACCURACY
                    )
                    uncertainty = {
                        "rule": "uncertain when the top probability < min_probability",
                        "min_probability": uncertainty.pop("min_probability"),
                        "target_accuracy": UNCERTAIN_TARGET_ACCURACY,
                        "fitted_on": "field_val",
                        "effect": {"field_val": uncertainty},
                    }
                else:
                    uncertainty["effect"]["field_test"] = rule_effect(
                        path_probs[data.ok], ok_labels, uncertainty["min_probability"]
                    )
        metrics[key] = scored[0]
        if int8_metrics is not None:
            int8_metrics[key] = scored[1]
        pairs = zip(paths, scored, strict=True)
        accuracies = ", ".join(f"{p.name} {r['accuracy']:.4f}" for p, r in pairs)
        log(f"field benchmark ({data.split}, n={len(data.samples)}): {accuracies}")
    if uncertainty:
        effect = rule_effect(probs, test_labels, uncertainty["min_probability"])
        uncertainty["effect"]["mnist_test"] = effect
    if real_set is not None:  # people's photos and drawings (evaluation/realset)
        real = RealSet.load(real_set)
        scored = []
        for path in paths:
            path_probs, path_logits = onnx_predict(path, real.rows)
            scored.append(real.metrics(path_probs))
            if path == onnx_path:
                calibration["ece"]["real_set"] = ece_before_after(
                    path_logits[real.ok], real.labels[real.ok], temperature
                )
                if uncertainty:
                    uncertainty["effect"]["real_set"] = rule_effect(
                        path_probs[real.ok], real.labels[real.ok], uncertainty["min_probability"]
                    )
        metrics["real_set"] = scored[0]
        if int8_metrics is not None:
            int8_metrics["real_set"] = scored[1]
        log(
            f"real set (n={real.labels.size}): {scored[0]['accuracy']:.4f} {scored[0]['per_style']}"
        )
    if uncertainty:
        log(f"uncertain below p={uncertainty['min_probability']}: {uncertainty['effect']}")
    log(f"calibration: {calibration['ece']}")

    return Measured(metrics, int8_metrics, calibration, uncertainty)


def run(config: TrainConfig, options: RunOptions, log: Callable[[str], None] = print) -> Path:
    started = time.perf_counter()
    data_dir = resolve_data_dir(options.data_dir)
    images, labels = load_mnist("train", data_dir)
    train_idx, val_idx = train_val_split(len(labels), options.val_size, seed=0)
    if options.train_limit:
        train_idx = train_idx[: options.train_limit]
    log(f"data: {len(train_idx)} train / {len(val_idx)} val images from {data_dir}")

    results: list[TrainResult] = []
    for member in range(options.members):
        if options.from_run is not None:  # re-export (e.g. after a preprocessing change)
            results.append(load_result(options.from_run / f"member{member}.pt"))
            log(f"loaded member {member} from {options.from_run}: no training")
            continue
        member_config = replace(config, seed=config.seed + member)
        if options.members > 1:
            log(f"--- ensemble member {member + 1}/{options.members} (seed {member_config.seed})")
        result = train(
            member_config,
            images[train_idx],
            labels[train_idx],
            images[val_idx],
            labels[val_idx],
            log=log,
            progress=options.progress,
        )
        result.command = options.command
        save_checkpoint(options.run_dir / f"member{member}.pt", result)
        results.append(result)
    model = results[0].model if len(results) == 1 else Ensemble([r.model for r in results])
    config = results[0].config
    command = results[0].command or options.command
    train_seconds = sum(r.seconds for r in results)
    log(f"training took {train_seconds:.0f}s")

    # Calibration before export: the temperature goes into the graph's softmax
    field_val = field_split("val", options.field_n, data_dir) if options.field_n else None
    field_test = field_split("test", options.field_n, data_dir) if options.field_n else None
    mnist_val = (images[val_idx], labels[val_idx])
    temperature, calibration = calibrate(model, field_val, mnist_val)
    log(f"calibration: temperature {temperature:.3f} ({calibration['fitted_on']})")

    test_images, test_labels = load_mnist("test", data_dir)
    out = options.out
    onnx_path = export_onnx(model, out / "model.onnx", temperature)
    parity = check_parity(model, onnx_path, test_images[:4000], temperature)
    size_mb = onnx_path.stat().st_size / 1e6
    log(f"exported {onnx_path} ({size_mb:.2f} MB); parity max diff {parity:.2e}")

    int8_path = quantize_int8(onnx_path, out / "model.int8.onnx") if options.int8 else None
    paths = [onnx_path] if int8_path is None else [onnx_path, int8_path]
    measured = measure(
        onnx_path,
        int8_path,
        temperature=temperature,
        calibration=calibration,
        mnist_val=mnist_val,
        mnist_test=(test_images, test_labels),
        field_val=field_val,
        field_test=field_test,
        real_set=options.real_set,
        report_dir=out / "report",
        history=[asdict(h) for h in results[0].history],
        log=log,
    )

    card = build_card(
        out,
        description=_describe(config, options.members),
        metrics=measured.metrics,
        training={
            "config": asdict(config),
            "members": options.members,
            "command": command,
            "seconds": round(train_seconds, 1),
            # export and measurement only, when re-exporting a run: then say so
            ("export_seconds" if options.from_run is not None else "total_seconds"): round(
                time.perf_counter() - started, 1
            ),
            "seed": config.seed,
            "best_epochs": [r.best_epoch for r in results],
            "history": [asdict(h) for r in results for h in r.history],
            "torch_version": torch.__version__,
            "host": f"{platform.machine()} {torch.get_num_threads()} threads",
            "onnx_parity_max_abs_diff": parity,
            **({"measured_by": options.command} if options.from_run is not None else {}),
        },
        data={
            "dataset": "MNIST (original IDX files)",
            "md5_uncompressed": file_md5s(),
            "train_images": len(train_idx),
            "val_images": len(val_idx),
            "val_split": {"size": options.val_size, "seed": 0},
            "test_images": len(test_labels),
        },
        int8_metrics=measured.int8_metrics,
        extra={
            "calibration": measured.calibration,
            **({"uncertainty": measured.uncertainty} if measured.uncertainty else {}),
            **({"benchmark": throughput(paths, log)} if options.benchmark else {}),
        },
    )
    card_path = save_card(out, card)
    log(f"wrote {card_path}")
    return card_path


def throughput(paths: list[Path], log: Callable[[str], None]) -> dict[str, Any]:
    table = benchmark(paths)
    for name, row in table.items():
        log(f"onnxruntime {name}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in row.items()))
    return {
        "images_per_second": table,
        "command": "python -m training.benchmark " + " ".join(str(p) for p in paths),
        "note": "raw session.run on a shared 2-core machine; bB_tT = batch B, T intra-op threads",
    }


def _describe(config: TrainConfig, members: int) -> str:
    m = config.model
    layers = "-".join(str(h) for h in (784, *m.hidden, 10))
    what = f"MLP {layers} ({m.activation}{', batchnorm' if m.batchnorm else ''})"
    if members > 1:
        what = f"ensemble of {members} x {what}, logits averaged in one graph"
    aug = "augmented" if config.augment is not None else "unaugmented"
    return f"{what}; {aug} MNIST training; input raw 0..255 pixels, white digit on black"
