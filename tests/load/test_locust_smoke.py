"""A short, bounded Locust run against the real service on a free localhost port.

Locust runs as a subprocess (it monkey-patches everything with gevent, which
must not happen inside pytest). Two runs: the real suite must pass with every
answer checked, and the same suite with a deliberately mislabelled pool must
fail, which proves the accuracy gate turns a fast-but-wrong service into a
non-zero exit code.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.live_server import ROOT, LiveServer, live_server

LOCUSTFILE = ROOT / "tests" / "load" / "locustfile.py"
pytestmark = pytest.mark.slow


def run_locust(server: LiveServer, out: Path, *args: str, seconds: int = 4) -> tuple[int, str]:
    """Run a headless Locust for `seconds`; return (exit code, combined output)."""
    command = [
        *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"),
        *("--host", server.url, "-u", "4", "-r", "4", "-t", f"{seconds}s", "--stop-timeout", "5"),
        *("--csv", str(out), "--html", f"{out}.html", "--only-summary", "--loglevel", "INFO"),
        # A 120-image pool; a few dozen answers in 4 s. The model misreads ~1.6% of the
        # pool, so a 95% gate could flake on 3 misses; 80% still fails a wrong service.
        *("--pool-size", "120", "--min-accuracy", "0.8"),
        *args,
    ]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    environment.pop("MNIST_API_KEY", None)
    done = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=90
    )
    return done.returncode, done.stdout + done.stderr


def aggregated_row(csv_path: Path) -> dict[str, str]:
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return next(row for row in rows if row["Name"] == "Aggregated")


def test_locust_smoke_run_passes_and_wrong_answers_fail(tmp_path: Path) -> None:
    with live_server(tmp_path, "--no-access-log") as server:
        code, output = run_locust(server, tmp_path / "good")
        assert code == 0, output[-3000:]
        total = aggregated_row(tmp_path / "good_stats.csv")
        assert int(total["Request Count"]) > 0, output[-3000:]
        assert int(total["Failure Count"]) == 0, output[-3000:]
        assert (tmp_path / "good.html").stat().st_size > 0
        accuracy = json.loads((tmp_path / "good_accuracy.json").read_text())
        assert accuracy["passed"] and accuracy["checked"] > 0
        assert accuracy["accuracy"] >= 0.8

        # Every label shifted by one: the service is right, so "accuracy" collapses.
        code, output = run_locust(server, tmp_path / "wrong", "--label-offset", "1", seconds=2)
        assert code != 0, output[-3000:]
        verdict = json.loads((tmp_path / "wrong_accuracy.json").read_text())
        assert not verdict["passed"]
        assert any("accuracy" in problem for problem in verdict["problems"]), verdict
