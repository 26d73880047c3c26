"""Scoring and the report, with fake answerers: no model, no network, no data."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from evaluation.realset.dataset import RealDigit
from evaluation.realset.report import format_report, summarise
from evaluation.realset.scoring import Answer, over_http, score

PNG = b"\x89PNG\r\n\x1a\n" + b"rest"
JPEG = b"\xff\xd8\xff\xe0" + b"rest"


def _digits(tmp_path: Path) -> list[RealDigit]:
    specs = [
        ("r0001", 7, "photo", "a/one", PNG),
        ("r0002", 1, "canvas", "a/one", JPEG),
        ("r0003", 4, "photo", "b/two", PNG),
        ("r0004", 0, "scan", "b/two", PNG),
    ]
    digits = []
    for id_, label, style, source, body in specs:
        path = tmp_path / f"{id_}.bin"
        path.write_bytes(body)
        digits.append(RealDigit(id_, path, label, style, source))
    return digits


def test_over_http_posts_raw_bytes_with_the_sniffed_type_and_counts_errors(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers["content-type"]))
        if request.headers["content-type"] == "image/jpeg":
            return httpx.Response(422, json={"error": "the image is blank"})
        return httpx.Response(200, json={"digit": 7, "confidence": 0.9})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        results = score(_digits(tmp_path)[:2], over_http("http://test/", client))
    assert seen == [("/v1/predict", "image/png"), ("/v1/predict", "image/jpeg")]
    assert [r.correct for r in results] == [True, False]
    assert results[1].answer == Answer(None, None, "422 the image is blank")


def test_the_report_counts_per_style_source_and_digit_and_lists_every_miss(tmp_path: Path) -> None:
    answers = {PNG: Answer(7, 0.8), JPEG: Answer(None, None, "415 no")}
    results = score(_digits(tmp_path), lambda body: answers[body])
    summary = summarise(results, answered_by="fake")
    assert summary["overall"] == {"correct": 1, "total": 4, "accuracy": 0.25}
    assert summary["by_style"]["photo"] == {"correct": 1, "total": 2, "accuracy": 0.5}
    assert list(summary["by_style"]) == ["photo", "scan", "canvas"]  # in STYLES order
    assert summary["by_source"]["b/two"]["correct"] == 0
    assert summary["by_digit"]["7"]["accuracy"] == 1.0
    assert [(m["id"], m["label"], m["answer"]) for m in summary["misses"]] == [
        ("r0002", 1, None),
        ("r0003", 4, 7),
        ("r0004", 0, 7),
    ]
    json.dumps(summary)  # what --json writes
    text = format_report(summary)
    assert "overall: 1/4 = 25.0%" in text
    assert "r0002      1      -     -  canvas       a/one  [415 no]" in text
