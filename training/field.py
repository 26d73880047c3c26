"""Moved to `evaluation.field` (one set of upload renderers for tests, benchmarks and
training); kept so that `python -m training.field ...` keeps working."""

from __future__ import annotations

from evaluation.field import main

if __name__ == "__main__":
    raise SystemExit(main())
