"""The load suite's answer checks and pass/fail rules, without running Locust."""

from __future__ import annotations

from typing import Any

import pytest

from evaluation.uploads import KINDS, build_pool, multipart
from tests.load.checks import (
    Accuracy,
    BadAnswer,
    Thresholds,
    check_batch,
    check_prediction,
    check_v2,
)


def prediction(digit: int = 3) -> dict[str, Any]:
    probabilities = [0.01] * 10
    probabilities[digit] = 0.91
    return {
        "digit": digit,
        "confidence": 0.91,
        "probabilities": probabilities,
        "model": {"name": "mnist-mlp", "version": 1},
    }


def test_a_valid_prediction_gives_its_digit() -> None:
    assert check_prediction(prediction(7)) == 7


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("digit", 10),
        ("digit", "3"),
        ("probabilities", [0.1] * 9),
        ("probabilities", [0.5] * 10),
        ("confidence", 0.5),
        ("model", None),
    ],
)
def test_a_malformed_prediction_is_a_bad_answer(field: str, value: object) -> None:
    answer = prediction(3)
    answer[field] = value
    with pytest.raises(BadAnswer):
        check_prediction(answer)


def test_digit_must_be_the_most_probable_class() -> None:
    answer = prediction(3)
    answer["digit"] = 4
    with pytest.raises(BadAnswer):
        check_prediction(answer)


def test_batch_answers_keep_count_and_order() -> None:
    answer = {"predictions": [prediction(1), prediction(2)]}
    assert check_batch(answer, 2) == [1, 2]
    with pytest.raises(BadAnswer):
        check_batch(answer, 3)


def test_v2_answers_are_checked_against_their_shapes() -> None:
    rows = [prediction(5)["probabilities"], prediction(0)["probabilities"]]
    answer = {
        "outputs": [
            {"name": "probabilities", "shape": [2, 10], "datatype": "FP32",
             "data": rows[0] + rows[1]},
            {"name": "digit", "shape": [2], "datatype": "INT64", "data": [5, 0]},
        ]
    }  # fmt: skip
    assert check_v2(answer, 2) == [5, 0]
    answer["outputs"][1]["data"] = [0, 5]
    with pytest.raises(BadAnswer):
        check_v2(answer, 2)


def test_thresholds_fail_a_fast_but_wrong_run() -> None:
    accuracy = Accuracy()
    for _ in range(90):
        accuracy.add("png28", 1, 1)
    for _ in range(10):
        accuracy.add("png28", 1, 2)
    rules = Thresholds(min_accuracy=0.95, max_fail_ratio=0.01, max_p95_ms=100, max_p99_ms=0)
    problems = rules.violations(
        accuracy=accuracy, requests=100, fail_ratio=0.0, p95_ms=5, p99_ms=10_000
    )
    assert len(problems) == 1 and "accuracy 90.00%" in problems[0]
    assert accuracy.summary()["by_kind"]["png28"]["checked"] == 100


def test_thresholds_fail_on_errors_latency_and_no_traffic() -> None:
    rules = Thresholds(min_accuracy=0.5, max_fail_ratio=0.01, max_p95_ms=100, max_p99_ms=200)
    problems = rules.violations(
        accuracy=Accuracy(), requests=0, fail_ratio=0.5, p95_ms=150, p99_ms=250
    )
    text = " ".join(problems)
    for expected in ("no requests", "failure ratio", "p95", "p99", "no answer was checked"):
        assert expected in text


def test_the_pool_is_labelled_varied_and_can_be_mislabelled() -> None:
    pool = build_pool(60, seed=3)
    assert {item.kind for item in pool} == set(KINDS)
    assert {item.content_type for item in pool} == {"image/png", "image/jpeg"}
    assert len({item.body for item in pool}) == len(pool)
    shifted = build_pool(60, seed=3, label_offset=1)
    assert all((a.label + 1) % 10 == b.label for a, b in zip(pool, shifted, strict=True))
    body, content_type = multipart("files", pool[:2])
    assert content_type.startswith("multipart/form-data; boundary=")
    assert body.count(b'name="files"') == 2 and pool[0].body in body
