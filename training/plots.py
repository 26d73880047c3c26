"""Report pictures (matplotlib, Agg): learning curves, confusion matrix, misclassified digits.

from training.plots import learning_curves, confusion_plot, misclassified_grid
learning_curves(history, out / "learning_curves.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never try to open a window (CI, containers)
import matplotlib.pyplot as plt
import numpy as np


def learning_curves(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Loss and accuracy per epoch, train vs validation."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train (augmented)")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss", yscale="log")
    ax_acc.plot(epochs, [100 * (1 - h["train_acc"]) for h in history], label="train (augmented)")
    ax_acc.plot(epochs, [100 * (1 - h["val_acc"]) for h in history], label="validation")
    ax_acc.set(xlabel="epoch", ylabel="error %", title="error rate", yscale="log")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def confusion_plot(matrix: Sequence[Sequence[int]], path: Path, title: str) -> Path:
    """Counts with the diagonal masked, so the few errors are what stands out."""
    cm = np.asarray(matrix)
    off = cm.astype(float)
    np.fill_diagonal(off, np.nan)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    image = ax.imshow(off, cmap="Reds")
    for (i, j), count in np.ndenumerate(cm):
        color = "tab:blue" if i == j else "black"
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=color)
    ax.set(
        xticks=range(10),
        yticks=range(10),
        xlabel="predicted",
        ylabel="true",
        title=f"{title} (diagonal in blue)",
    )
    fig.colorbar(image, ax=ax, label="errors")
    fig.tight_layout()
    return _save(fig, path)


def misclassified_grid(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    confidence: np.ndarray,
    path: Path,
    limit: int = 64,
) -> Path:
    """The most confident mistakes first, captioned `true -> predicted (p)`."""
    wrong = np.flatnonzero(labels != predictions)
    wrong = wrong[np.argsort(-confidence[wrong])][:limit]
    cols = 8
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong, strict=False):
        ax.imshow(images[i].reshape(28, 28), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{labels[i]}→{predictions[i]} ({confidence[i]:.2f})", fontsize=8)
    fig.suptitle(f"{len(wrong)} misclassified test digits (true→predicted, confidence)")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
