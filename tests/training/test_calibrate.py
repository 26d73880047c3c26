"""training.calibrate: temperature scaling finds the temperature, ECE measures it, and the
uncertain rule holds on the data it was chosen on."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibrate import (
    expected_calibration_error,
    fit_temperature,
    nll,
    rule_effect,
    softmax,
    uncertainty_rule,
)


def synthetic(temperature: float, n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn so that softmax(logits / temperature) is exactly calibrated."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (n, 10))
    logits[np.arange(n), rng.integers(0, 10, n)] += 4.0
    probabilities = softmax(logits / temperature)
    labels = np.array([rng.choice(10, p=p) for p in probabilities])
    return logits, labels


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_fit_recovers_the_temperature(true_temperature: float) -> None:
    logits, labels = synthetic(true_temperature)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.08)
    assert nll(logits, labels, fitted) <= nll(logits, labels, 1.0) + 1e-9


def test_ece_drops_when_the_temperature_is_right() -> None:
    logits, labels = synthetic(2.5)
    before = expected_calibration_error(softmax(logits), labels)  # overconfident
    after = expected_calibration_error(softmax(logits / fit_temperature(logits, labels)), labels)
    assert before > 0.05 and after < 0.02


def test_ece_of_perfect_and_of_hopeless_predictions() -> None:
    labels = np.arange(1000) % 10
    certain = np.eye(10)[labels]
    assert expected_calibration_error(certain, labels) == pytest.approx(0.0)
    wrong = np.eye(10)[(labels + 1) % 10]
    assert expected_calibration_error(wrong, labels) == pytest.approx(1.0)


def test_uncertain_rule_reaches_its_target_on_its_data() -> None:
    logits, labels = synthetic(1.0)
    probabilities = softmax(logits)
    rule = uncertainty_rule(probabilities, labels, target_accuracy=0.99)
    threshold = rule["min_probability"]
    kept = probabilities.max(axis=1) >= threshold
    assert float((probabilities.argmax(axis=1) == labels)[kept].mean()) >= 0.99 - 1e-3
    assert 0.0 < rule["flagged_share"] < 1.0 and rule["errors_caught"] > 0.5
    assert rule_effect(probabilities, labels, 0.0)["flagged_share"] == 0.0
    assert rule_effect(probabilities, labels, 1.01)["flagged_share"] == 1.0
