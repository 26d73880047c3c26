"""Classification metrics (numpy only): accuracy, per-class P/R/F1, macro, confusion.

    from training.evaluate import classification_report, format_table
    report = classification_report(labels, predictions)
    print(format_table(report))

Also runnable on a shipped ONNX model and the MNIST test set::

    python -m training.evaluate models/mnist-mlp/1/model.onnx --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

N_CLASSES = 10


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n: int = N_CLASSES) -> np.ndarray:
    """(n, n) counts; rows are true classes, columns predicted classes."""
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return matrix


def classification_report(labels: np.ndarray, predictions: np.ndarray) -> dict[str, Any]:
    """JSON-ready metrics. A class never predicted gets precision 0 (not NaN)."""
    cm = confusion_matrix(labels, predictions)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "n": len(labels),
        "accuracy": float(tp.sum() / max(1, len(labels))),
        "errors": int(len(labels) - tp.sum()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": {
            str(c): {
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "support": int(actual[c]),
            }
            for c in range(N_CLASSES)
        },
        "confusion_matrix": cm.tolist(),
    }


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers that go in a model card (no per-class detail)."""
    keys = ("n", "accuracy", "errors", "macro_precision", "macro_recall", "macro_f1")
    return {k: report[k] for k in keys}


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'class':>5} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>7}"]
    for c, row in report["per_class"].items():
        lines.append(
            f"{c:>5} {row['precision']:9.4f} {row['recall']:7.4f} {row['f1']:7.4f} "
            f"{row['support']:7d}"
        )
    lines.append(
        f"{'macro':>5} {report['macro_precision']:9.4f} {report['macro_recall']:7.4f} "
        f"{report['macro_f1']:7.4f} {report['n']:7d}"
    )
    lines.append(f"accuracy {report['accuracy']:.4f} ({report['errors']} errors of {report['n']})")
    return "\n".join(lines)


def write_report(path: Path, report: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    from training.data import load_mnist
    from training.export import onnx_predict

    parser = argparse.ArgumentParser(description="Score an ONNX model on the MNIST test set.")
    parser.add_argument("onnx", type=Path)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    images, labels = load_mnist("test", args.data_dir)
    probs, _ = onnx_predict(args.onnx, images)
    report = classification_report(labels, probs.argmax(1))
    print(format_table(report))
    if args.json:
        write_report(args.json, report)


if __name__ == "__main__":
    main()
