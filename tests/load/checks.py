"""Answer checks and pass/fail thresholds for the Locust suite; no gevent here, so
they can be unit-tested and reused.

A load test that only counts status codes passes a service that answers fast
and wrong. Every answer here is checked for shape, and its digit is compared
with the label of the image sent; `Accuracy` counts the matches.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


class BadAnswer(ValueError):
    """The response is not what the API promises (shape, types, ranges)."""


def check_prediction(answer: Any) -> int:
    """Validate one v1 prediction object; return its digit."""
    if not isinstance(answer, dict):
        raise BadAnswer(f"prediction is not an object: {str(answer)[:80]}")
    digit, confidence = answer.get("digit"), answer.get("confidence")
    probabilities = answer.get("probabilities")
    if not isinstance(digit, int) or not 0 <= digit <= 9:
        raise BadAnswer(f"digit {digit!r} is not an integer 0..9")
    if not isinstance(probabilities, list) or len(probabilities) != 10:
        raise BadAnswer("probabilities is not a list of 10 numbers")
    total = math.fsum(probabilities)
    if not 0.98 <= total <= 1.02:
        raise BadAnswer(f"probabilities sum to {total:.4f}, not 1")
    if not isinstance(confidence, float | int) or abs(confidence - max(probabilities)) > 1e-5:
        raise BadAnswer(f"confidence {confidence!r} is not the largest probability")
    if probabilities.index(max(probabilities)) != digit:
        raise BadAnswer(f"digit {digit} is not the most probable class")
    if not isinstance(answer.get("model"), dict):
        raise BadAnswer("prediction lacks its model {name, version}")
    return digit


def check_batch(answer: Any, count: int) -> list[int]:
    """Validate a /v1/predict/batch answer for `count` images; return the digits in order."""
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list) or len(predictions) != count:
        got = len(predictions) if isinstance(predictions, list) else "no"
        raise BadAnswer(f"sent {count} images, got {got} predictions")
    return [check_prediction(item) for item in predictions]


def check_v2(answer: Any, count: int) -> list[int]:
    """Validate an Open Inference Protocol v2 answer for `count` rows; return the digits."""
    outputs = answer.get("outputs") if isinstance(answer, dict) else None
    if not isinstance(outputs, list):
        raise BadAnswer("v2 answer has no outputs list")
    by_name = {out.get("name"): out for out in outputs if isinstance(out, dict)}
    digit, probabilities = by_name.get("digit"), by_name.get("probabilities")
    if digit is None or probabilities is None:
        raise BadAnswer(f"v2 outputs {sorted(map(str, by_name))} lack digit/probabilities")
    if digit.get("shape") != [count] or digit.get("datatype") != "INT64":
        raise BadAnswer(f"digit output {digit.get('shape')} {digit.get('datatype')}")
    if (
        probabilities.get("shape") != [count, 10]
        or len(probabilities.get("data", [])) != count * 10
    ):
        raise BadAnswer(f"probabilities output shape {probabilities.get('shape')}")
    digits = digit.get("data")
    if not isinstance(digits, list) or len(digits) != count:
        raise BadAnswer("digit data does not match its shape")
    rows = probabilities["data"]
    for index, value in enumerate(digits):
        row = rows[index * 10 : index * 10 + 10]
        if not isinstance(value, int) or row.index(max(row)) != value:
            raise BadAnswer(f"row {index}: digit {value!r} is not the most probable class")
    return [int(value) for value in digits]


@dataclass
class Accuracy:
    """How many answered digits matched the labels, overall and per image kind."""

    correct: Counter[str] = field(default_factory=Counter)
    total: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, predicted: int, label: int) -> None:
        self.total[kind] += 1
        self.correct[kind] += int(predicted == label)

    def merge(self, data: dict[str, dict[str, int]]) -> None:
        self.correct.update(data.get("correct", {}))
        self.total.update(data.get("total", {}))

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {"correct": dict(self.correct), "total": dict(self.total)}

    def reset(self) -> None:
        self.correct.clear()
        self.total.clear()

    @property
    def checked(self) -> int:
        return sum(self.total.values())

    @property
    def ratio(self) -> float:
        return sum(self.correct.values()) / self.checked if self.checked else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "accuracy": round(self.ratio, 4),
            "checked": self.checked,
            "correct": sum(self.correct.values()),
            "by_kind": {
                kind: {
                    "accuracy": round(self.correct[kind] / count, 4),
                    "checked": count,
                }
                for kind, count in sorted(self.total.items())
            },
        }


@dataclass(frozen=True)
class Thresholds:
    """Pass/fail limits of a run; 0 disables a latency limit."""

    min_accuracy: float = 0.95
    max_fail_ratio: float = 0.01
    max_p95_ms: float = 0.0
    max_p99_ms: float = 0.0

    def violations(
        self, *, accuracy: Accuracy, requests: int, fail_ratio: float, p95_ms: float, p99_ms: float
    ) -> list[str]:
        """Why the run fails (empty: it passes)."""
        problems = []
        if requests == 0:
            problems.append("no requests were made")
        if fail_ratio > self.max_fail_ratio:
            problems.append(f"failure ratio {fail_ratio:.2%} > {self.max_fail_ratio:.2%}")
        if self.max_p95_ms and p95_ms > self.max_p95_ms:
            problems.append(f"p95 {p95_ms:.0f} ms > {self.max_p95_ms:.0f} ms")
        if self.max_p99_ms and p99_ms > self.max_p99_ms:
            problems.append(f"p99 {p99_ms:.0f} ms > {self.max_p99_ms:.0f} ms")
        if accuracy.checked == 0:
            problems.append("no answer was checked against its label")
        elif accuracy.ratio < self.min_accuracy:
            problems.append(
                f"accuracy {accuracy.ratio:.2%} < {self.min_accuracy:.2%} "
                f"({accuracy.checked} images checked)"
            )
        return problems
