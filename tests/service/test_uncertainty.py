"""The "uncertain" flag: the rule, where its thresholds come from, and the answers."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient

from evaluation.samples import SEVEN_PNG
from service.config import DEFAULT_UNCERTAIN_BELOW, DEFAULT_UNCERTAIN_MARGIN, Settings
from service.model_card import ModelCard, read_card
from service.uncertainty import UncertaintyPolicy, UncertaintyRule
from tests.conftest import MODELS, png_bytes

SHIPPED = MODELS / "mnist-mlp" / "1"


def probabilities(*rows: dict[int, float]) -> np.ndarray:
    array = np.zeros((len(rows), 10), dtype=np.float32)
    for index, row in enumerate(rows):
        for digit, p in row.items():
            array[index, digit] = p
    return array


def card_with(rule: object) -> ModelCard:
    """The shipped card with `rule` as its `uncertainty` section (None: no rule at all)."""
    data = read_card(SHIPPED).model_dump()
    data.pop("uncertainty", None)
    if rule is not None:
        data["uncertainty"] = rule
    return ModelCard.model_validate(data)


def test_low_top_probability_or_close_top_two_is_uncertain() -> None:
    rule = UncertaintyRule(below=0.5, margin=0.3, source="test")
    flags = rule.flags(
        probabilities(
            {7: 0.98, 1: 0.02},  # sure
            {4: 0.46, 9: 0.44, 1: 0.10},  # top under 0.5, and close
            {4: 0.60, 9: 0.35, 1: 0.05},  # top two 0.25 apart: close
            {4: 0.70, 9: 0.25, 1: 0.05},  # 0.45 apart, top over 0.5: sure enough
            {3: 0.40, 5: 0.10, 8: 0.10, 0: 0.10, 2: 0.10, 6: 0.10, 9: 0.10},  # low top
        )
    )
    assert flags.tolist() == [False, True, True, False, True]


def test_settings_win_then_the_card_then_the_defaults() -> None:
    recommending = card_with({"min_probability": 0.7, "min_margin": 0.2})
    silent = card_with(None)

    card_rule = UncertaintyPolicy(None, None).rule(recommending)
    assert (card_rule.below, card_rule.margin, card_rule.source) == (0.7, 0.2, "model card")

    mixed = UncertaintyPolicy(0.9, None).rule(recommending)
    assert (mixed.below, mixed.margin, mixed.source) == (0.9, 0.2, "settings + model card")

    default = UncertaintyPolicy(None, None).rule(silent)
    assert (default.below, default.margin, default.source) == (
        DEFAULT_UNCERTAIN_BELOW,
        DEFAULT_UNCERTAIN_MARGIN,
        "default",
    )


def test_a_card_rule_on_the_top_probability_alone_has_no_margin() -> None:
    rule = UncertaintyPolicy(None, None).rule(card_with({"min_probability": 0.82}))
    assert (rule.below, rule.margin, rule.source) == (0.82, 0.0, "model card")


@pytest.mark.parametrize(
    "rule", ["0.7", {"min_probability": "high"}, {"min_probability": 3.0}, [0.7], {}]
)
def test_a_malformed_card_recommendation_is_ignored(rule: object) -> None:
    policy = UncertaintyPolicy(None, None).rule(card_with(rule))
    assert (policy.below, policy.source) == (DEFAULT_UNCERTAIN_BELOW, "default")


def test_thresholds_are_bounded_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_UNCERTAIN_BELOW", "0.9")
    assert Settings().uncertain_below == 0.9
    with pytest.raises(ValueError):
        Settings(uncertain_margin=1.5)


def decimals(value: float) -> int:
    text = repr(value)
    if "e-" in text:
        mantissa, exponent = text.split("e-")
        return int(exponent) + len(mantissa.partition(".")[2])
    return len(text.partition(".")[2])


def test_answers_carry_the_flag_and_rounded_numbers(client: TestClient) -> None:
    answer = client.post("/v1/predict", files={"file": ("7.png", SEVEN_PNG, "image/png")}).json()
    assert list(answer) == ["digit", "confidence", "uncertain", "probabilities", "model"]
    assert answer["digit"] == 7 and answer["uncertain"] is False
    for number in [answer["confidence"], *answer["probabilities"]]:
        assert decimals(number) <= 6, number
    assert math.isclose(sum(answer["probabilities"]), 1, abs_tol=1e-4)


def test_the_flag_follows_the_rule_the_models_endpoint_reports(
    make_client: Callable[..., TestClient], mnist_sample: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = mnist_sample
    # Blends of two different digits: the model hesitates on some of them.
    blends = [
        png_bytes(np.maximum(images[i], images[i + 1]))
        for i in range(0, 60, 2)
        if mnist_sample[1][i] != mnist_sample[1][i + 1]
    ]
    client = make_client(uncertain_below=0.9, uncertain_margin=0.5)
    (model,) = client.get("/v1/models").json()["models"]
    assert model["uncertain_rule"] == {"below": 0.9, "margin": 0.5, "source": "settings"}
    files = [("files", (f"{i}.png", body, "image/png")) for i, body in enumerate(blends)]
    answers = client.post("/v1/predict/batch", files=files).json()["predictions"]
    flags = []
    for answer in answers:
        top, second = sorted(answer["probabilities"], reverse=True)[:2]
        expected = top < 0.9 or top - second < 0.5
        if abs(top - 0.9) > 1e-5 and abs(top - second - 0.5) > 1e-5:  # clear of rounding
            assert answer["uncertain"] is expected, answer
        flags.append(answer["uncertain"])
    assert True in flags and False in flags  # the blends exercise both sides


def test_the_models_endpoint_reports_the_rule_in_use(client: TestClient) -> None:
    for model in client.get("/v1/models").json()["models"]:
        card = read_card(MODELS / "mnist-mlp" / str(model["version"]))
        expected = UncertaintyPolicy(None, None).rule(card)
        assert model["uncertain_rule"] == expected.describe()


def test_the_calibration_picks_the_best_rule_within_its_budget() -> None:
    """`evaluation.uncertainty` picks thresholds that meet its false-alarm budget."""
    from evaluation.uncertainty import BELOW_GRID, MARGIN_GRID, choose, score

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 10)) * 4
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = probs.argmax(axis=1)
    labels[:40] = (labels[:40] + 1) % 10  # 40 mistakes
    scores = [
        score(probs, labels, UncertaintyRule(b, m, "grid")) for b in BELOW_GRID for m in MARGIN_GRID
    ]
    best = choose(scores, 0.2)
    assert best.false_alarms <= 0.2
    assert best.caught == max(s.caught for s in scores if s.false_alarms <= 0.2)
