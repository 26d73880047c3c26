"""Accuracy tables for a scored real set: overall, per style, per source, per digit,
and every miss. `summarise` gives plain data (what `--json` writes); `format_report`
prints the same as text tables.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from evaluation.realset.provenance import STYLES
from evaluation.realset.scoring import Result


def _group(results: Sequence[Result], key: Callable[[Result], str]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Result]] = defaultdict(list)
    for result in results:
        groups[key(result)].append(result)
    return {name: _accuracy(members) for name, members in groups.items()}


def _accuracy(results: Sequence[Result]) -> dict[str, Any]:
    correct = sum(result.correct for result in results)
    total = len(results)
    return {"correct": correct, "total": total, "accuracy": correct / total if total else 0.0}


def summarise(results: Sequence[Result], *, answered_by: str) -> dict[str, Any]:
    """Everything the report shows, as JSON-ready data."""
    by_style = _group(results, lambda r: r.item.style)
    order = {style: i for i, style in enumerate(STYLES)}
    misses = [
        {
            "id": r.item.id,
            "label": r.item.label,
            "answer": r.answer.digit,
            "confidence": r.answer.confidence,
            "error": r.answer.error,
            "style": r.item.style,
            "source": r.item.source,
            "file": r.item.path.name,
        }
        for r in results
        if not r.correct
    ]
    return {
        "answered_by": answered_by,
        "overall": _accuracy(results),
        "by_style": dict(sorted(by_style.items(), key=lambda kv: order.get(kv[0], 99))),
        "by_source": dict(sorted(_group(results, lambda r: r.item.source).items())),
        "by_digit": dict(sorted(_group(results, lambda r: str(r.item.label)).items())),
        "misses": misses,
    }


def _table(title: str, groups: dict[str, dict[str, Any]]) -> list[str]:
    width = max([len(title), *(len(name) for name in groups)])
    lines = [f"{title:<{width}}  {'right':>5} / {'n':<4} {'accuracy':>8}"]
    for name, group in groups.items():
        lines.append(
            f"{name:<{width}}  {group['correct']:>5} / {group['total']:<4} "
            f"{100 * group['accuracy']:>7.1f}%"
        )
    return lines


def format_report(summary: dict[str, Any]) -> str:
    overall = summary["overall"]
    lines = [
        f"Real handwritten digits, answered by {summary['answered_by']}",
        f"overall: {overall['correct']}/{overall['total']} = {100 * overall['accuracy']:.1f}%",
        "",
        *_table("style", summary["by_style"]),
        "",
        *_table("digit", summary["by_digit"]),
        "",
        *_table("source repository", summary["by_source"]),
        "",
        f"misses ({len(summary['misses'])}):",
    ]
    if summary["misses"]:
        lines.append(f"{'id':<6} {'label':>5} {'answer':>6} {'conf':>5}  {'style':<12} source")
    for miss in summary["misses"]:
        answer = "-" if miss["answer"] is None else str(miss["answer"])
        confidence = "-" if miss["confidence"] is None else f"{miss['confidence']:.2f}"
        line = (
            f"{miss['id']:<6} {miss['label']:>5} {answer:>6} {confidence:>5}  "
            f"{miss['style']:<12} {miss['source']}"
        )
        if miss["error"]:
            line += f"  [{miss['error'][:100]}]"
        lines.append(line)
    return "\n".join(lines)
