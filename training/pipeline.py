"""One end-to-end run: data -> train (1..N members) -> ONNX + int8 -> evaluate -> report + card.

Called by `python -m training` (see training/__main__.py for the flags).
The test set is touched only here, after training, for the reported numbers;
model choices use the validation split.
"""

from __future__ import annotations

import importlib.util
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training import plots
from training.benchmark import benchmark
from training.card import build_card, save_card
from training.data import file_md5s, load_mnist, resolve_data_dir, train_val_split
from training.evaluate import classification_report, format_table, summary, write_report
from training.export import check_parity, export_onnx, onnx_predict, quantize_int8
from training.model import Ensemble
from training.train import TrainConfig, TrainResult, save_checkpoint, train


@dataclass
class RunOptions:
    out: Path  # models/<name>/<version>
    data_dir: Path | None = None
    run_dir: Path = Path("runs")  # checkpoints (not shipped)
    members: int = 1  # >1: an ensemble of independently seeded MLPs, exported as one graph
    val_size: int = 5000
    train_limit: int | None = None  # use only the first N training images (--quick)
    int8: bool = True
    field_n: int = 1300  # digits rendered for the field benchmark (0: skip); 100 per kind
    command: str = ""
    progress: bool = True
    benchmark: bool = True  # measure raw onnxruntime throughput into the card


def field_metrics(
    paths: list[Path], split: str, n: int, data_dir: Path | None
) -> list[dict[str, Any]] | None:
    """Field-benchmark accuracy (training/field.py) of each ONNX file, or None if unavailable.

    The same rendered files are scored for every path, so fp32 and int8 compare fairly.
    """
    if importlib.util.find_spec("training.field") is None:
        return None
    from training import field

    images, labels = field.held_out_digits(split, data_dir)
    samples = field.render_field_set(images[:n], labels[:n], seed=0)
    results = []
    for path in paths:
        report = field.score(field.onnx_predictor(path), samples)
        results.append(
            {
                "split": split,
                "n": report.n,
                "accuracy": report.accuracy,
                "per_kind": report.per_kind,
            }
        )
    return results


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
        save_checkpoint(options.run_dir / f"member{member}.pt", result)
        results.append(result)
    model = results[0].model if len(results) == 1 else Ensemble([r.model for r in results])
    train_seconds = sum(r.seconds for r in results)
    log(f"training took {train_seconds:.0f}s")

    test_images, test_labels = load_mnist("test", data_dir)
    out = options.out
    onnx_path = export_onnx(model, out / "model.onnx")
    parity = check_parity(model, onnx_path, test_images[:4000])
    size_mb = onnx_path.stat().st_size / 1e6
    log(f"exported {onnx_path} ({size_mb:.2f} MB); parity max diff {parity:.2e}")

    val_probs, _ = onnx_predict(onnx_path, images[val_idx])
    val_acc = float((val_probs.argmax(1) == labels[val_idx]).mean())
    probs, _ = onnx_predict(onnx_path, test_images)
    predictions = probs.argmax(1)
    report = classification_report(test_labels, predictions)
    log(format_table(report))

    report_dir = out / "report"
    write_report(report_dir / "mnist_test.json", report)
    history = [asdict(h) for h in results[0].history]
    plots.learning_curves(history, report_dir / "learning_curves.png")
    cm_path = report_dir / "confusion_matrix.png"
    plots.confusion_plot(report["confusion_matrix"], cm_path, "MNIST test")
    plots.misclassified_grid(
        test_images, test_labels, predictions, probs.max(1), report_dir / "misclassified.png"
    )

    metrics: dict[str, Any] = {"mnist_test": summary(report), "mnist_val": {"accuracy": val_acc}}
    int8_path = quantize_int8(onnx_path, out / "model.int8.onnx") if options.int8 else None
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
    for split in ("val", "test") if options.field_n else ():
        scored = field_metrics(paths, split, options.field_n, data_dir)
        if scored is None:
            log("field benchmark: training/field.py not available, skipped")
            break
        key = "field_benchmark" if split == "test" else "field_benchmark_val"
        metrics[key] = scored[0]
        if int8_metrics is not None:
            int8_metrics[key] = scored[1]
        pairs = zip(paths, scored, strict=True)
        accuracies = ", ".join(f"{p.name} {r['accuracy']:.4f}" for p, r in pairs)
        log(f"field benchmark ({split}, n={options.field_n}): {accuracies}")

    card = build_card(
        out,
        description=_describe(config, options.members),
        metrics=metrics,
        training={
            "config": asdict(config),
            "members": options.members,
            "command": options.command,
            "seconds": round(train_seconds, 1),
            "total_seconds": round(time.perf_counter() - started, 1),
            "seed": config.seed,
            "best_epochs": [r.best_epoch for r in results],
            "history": [asdict(h) for r in results for h in r.history],
            "torch_version": torch.__version__,
            "host": f"{platform.machine()} {torch.get_num_threads()} threads",
            "onnx_parity_max_abs_diff": parity,
        },
        data={
            "dataset": "MNIST (original IDX files)",
            "md5_uncompressed": file_md5s(),
            "train_images": len(train_idx),
            "val_images": len(val_idx),
            "val_split": {"size": options.val_size, "seed": 0},
            "test_images": len(test_labels),
        },
        int8_metrics=int8_metrics,
        extra={"benchmark": _throughput(paths, log)} if options.benchmark else None,
    )
    card_path = save_card(out, card)
    log(f"wrote {card_path}")
    return card_path


def _throughput(paths: list[Path], log: Callable[[str], None]) -> dict[str, Any]:
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


def sample_accuracy(onnx_path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    probs, _ = onnx_predict(onnx_path, images)
    return float((probs.argmax(1) == labels).mean())
