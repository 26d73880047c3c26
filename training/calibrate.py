"""Confidence that means something: temperature scaling and an "uncertain" rule.

    temperature = fit_temperature(val_logits, val_labels)
    ece = expected_calibration_error(softmax(val_logits / temperature), val_labels)
    rule = uncertainty_rule(softmax(val_logits / temperature), val_labels)

A network trained with heavy augmentation, weight averaging and no label
smoothing is not calibrated: its top probability is not the chance it is right.
Temperature scaling (Guo et al. 2017) divides the logits by one number T fitted
to minimise the validation negative log-likelihood; it never changes which digit
wins, only how sure the model says it is. The exported graph applies T inside its
softmax, so every client gets calibrated probabilities.

The uncertain rule turns them into advice a client can act on ("ask for another
photo"): below `min_probability` the answer is wrong often enough to flag.
Everything here is numpy: fitted on validation data, never on the test set.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ECE_BINS = 15


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / temperature)."""
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scaled).sum(axis=1))
    return float((log_norm - scaled[np.arange(len(labels)), labels]).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising validation NLL (golden-section search on log T)."""
    logits = logits.astype(np.float64)
    low, high = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(logits, labels, np.exp(a)), nll(logits, labels, np.exp(b))
    for _ in range(60):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(logits, labels, np.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(logits, labels, np.exp(b))
    return float(np.exp((low + high) / 2.0))


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE: |accuracy - mean top probability| per equal-width confidence bin, weighted by size."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap = abs(float(correct[members].mean()) - float(confidence[members].mean()))
            total += gap * float(members.mean())
    return total


def uncertainty_rule(
    probabilities: np.ndarray, labels: np.ndarray, *, target_accuracy: float = 0.995
) -> dict[str, Any]:
    """The lowest top-probability threshold above which predictions reach `target_accuracy`.

    Predictions whose top probability is below the threshold are "uncertain": the
    service flags them so a client can ask for another photo. Also reports, on
    the same data, how many predictions are flagged and how many errors that catches.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    order = np.argsort(-confidence)
    # accuracy of the k most confident predictions, for every k
    running = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    reaching = np.flatnonzero(running >= target_accuracy)
    k = int(reaching[-1]) + 1 if reaching.size else 1
    threshold = float(confidence[order][k - 1])
    return {"min_probability": round(threshold, 4), **rule_effect(probabilities, labels, threshold)}


def rule_effect(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """What flagging predictions with top probability < `threshold` does on these data."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    flagged = confidence < threshold
    errors = int((~correct).sum())
    kept = correct[~flagged]
    return {
        "flagged_share": round(float(flagged.mean()), 4),
        "errors_caught": round(float((flagged & ~correct).sum() / errors), 4) if errors else 1.0,
        "accuracy_unflagged": round(float(kept.mean()), 4) if kept.size else 1.0,
        "n": len(labels),
    }
