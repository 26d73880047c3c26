"""When an answer is "uncertain": the rule, and where its two thresholds come from.

An answer is uncertain when its top probability is under `below`, or when the
top two probabilities are closer than `margin` (the model hesitates between two
digits). Uncertain answers are the ones a person should check or retake: on the
MNIST validation split they hold most of the model's mistakes and few of its
right answers (`python -m evaluation.uncertainty` measures both; docs in the
README, "Uncertain answers").

Each threshold comes from, first match wins: the setting
(`MNIST_UNCERTAIN_BELOW`, `MNIST_UNCERTAIN_MARGIN`), the model card's rule
(`uncertainty.min_probability` and, when training fitted one,
`uncertainty.min_margin`; written by `training.calibrate` for that model, a
card rule without a margin uses the top probability alone), or the defaults in
`service.config`. Knows nothing of HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.config import DEFAULT_UNCERTAIN_BELOW as DEFAULT_BELOW
from service.config import DEFAULT_UNCERTAIN_MARGIN as DEFAULT_MARGIN
from service.model_card import ModelCard

CARD_SECTION = "uncertainty"
CARD_BELOW = "min_probability"
CARD_MARGIN = "min_margin"


@dataclass(frozen=True)
class UncertaintyRule:
    below: float
    margin: float
    source: str  # where the thresholds came from: "settings", "model card", "default"

    def flags(self, probabilities: np.ndarray) -> np.ndarray:
        """(n, 10) probabilities -> (n,) bool: which answers are uncertain."""
        two = np.partition(probabilities, -2, axis=1)[:, -2:]
        second, top = two[:, 0], two[:, 1]
        flags: np.ndarray = (top < self.below) | (top - second < self.margin)
        return flags

    def describe(self) -> dict[str, object]:
        return {"below": self.below, "margin": self.margin, "source": self.source}


def card_recommendation(card: ModelCard) -> tuple[float | None, float | None]:
    """The card's rule as (below, margin), when it has a valid one; a rule fitted on
    the top probability alone has no margin (0)."""
    section: Any = (card.model_extra or {}).get(CARD_SECTION)
    if not isinstance(section, dict):
        return None, None

    def number(key: str) -> float | None:
        value = section.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
            return float(value)
        return None

    below = number(CARD_BELOW)
    if below is None:
        return None, None
    margin = number(CARD_MARGIN) if CARD_MARGIN in section else 0.0
    return below, margin


class UncertaintyPolicy:
    """The settings' thresholds (None: not set) resolved against each served model's card."""

    def __init__(self, below: float | None, margin: float | None) -> None:
        self.below = below
        self.margin = margin
        self._rules: dict[str, UncertaintyRule] = {}

    def rule(self, card: ModelCard) -> UncertaintyRule:
        """The rule for one model version (cached per model file)."""
        rule = self._rules.get(card.sha256)
        if rule is None:
            rule = self._rules[card.sha256] = self._resolve(card)
        return rule

    def _resolve(self, card: ModelCard) -> UncertaintyRule:
        card_below, card_margin = card_recommendation(card)
        below, margin = self.below, self.margin
        sources = []
        if below is not None or margin is not None:
            sources.append("settings")
        if (below is None and card_below is not None) or (
            margin is None and card_margin is not None
        ):
            sources.append("model card")
        if below is None:
            below = card_below
        if margin is None:
            margin = card_margin
        if below is None or margin is None:
            sources.append("default")
        return UncertaintyRule(
            below=DEFAULT_BELOW if below is None else below,
            margin=DEFAULT_MARGIN if margin is None else margin,
            source=" + ".join(sources),
        )
