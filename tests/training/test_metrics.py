"""training.evaluate metrics on hand-checked numbers, and the report pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training import plots
from training.evaluate import classification_report, confusion_matrix, format_table, summary


def test_metrics_on_a_hand_computed_case() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1, 1])
    report = classification_report(labels, predicted)
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["errors"] == 2
    one = report["per_class"]["1"]
    assert one["precision"] == pytest.approx(2 / 4)  # 4 predicted 1, two right
    assert one["recall"] == pytest.approx(1.0)
    assert one["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    # class 2 never predicted: precision 0, not NaN; classes 3-9 absent: zeros, support 0
    assert report["per_class"]["2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    f1s = [report["per_class"][str(c)]["f1"] for c in range(10)]
    assert report["macro_f1"] == pytest.approx(sum(f1s) / 10)
    assert report["confusion_matrix"][0][:3] == [2, 1, 0]
    assert set(summary(report)) == {
        "n",
        "accuracy",
        "errors",
        "macro_precision",
        "macro_recall",
        "macro_f1",
    }


def test_confusion_matrix_rows_are_true_classes() -> None:
    cm = confusion_matrix(np.array([3, 3, 7]), np.array([3, 8, 7]))
    assert cm.sum() == 3 and cm[3, 3] == 1 and cm[3, 8] == 1 and cm[7, 7] == 1


def test_table_lists_every_class_and_the_accuracy() -> None:
    labels = np.arange(10).repeat(3)
    table = format_table(classification_report(labels, labels))
    assert table.count("\n") == 12
    assert "accuracy 1.0000 (0 errors of 30)" in table


def test_pictures_are_written(tmp_path: Path, sample: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = sample[0][:40], sample[1][:40].astype(np.int64)
    predicted = labels.copy()
    predicted[:5] = (predicted[:5] + 1) % 10
    history = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_acc": 0.9, "val_acc": 0.95}
        for e in (1, 2, 3)
    ]
    paths = [
        plots.learning_curves(history, tmp_path / "curves.png"),
        plots.confusion_plot(confusion_matrix(labels, predicted).tolist(), tmp_path / "c.png", ""),
        plots.misclassified_grid(images, labels, predicted, np.ones(40), tmp_path / "wrong.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
