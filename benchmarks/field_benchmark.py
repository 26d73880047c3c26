"""The synthetic field benchmark (`evaluation.field`): end-to-end accuracy on real-looking uploads.

    python -m benchmarks.field_benchmark --model models/mnist-mlp/2/model.onnx --n 1800
    python -m benchmarks.field_benchmark --url http://127.0.0.1:8000 --n 1800

Same flags as `python -m evaluation.field`; kept here so every benchmark lives in
`benchmarks/`. With `--url` each file goes through POST /v1/predict of a
running service, so the number includes the real HTTP parsing.
"""

from __future__ import annotations

from evaluation.field import main

if __name__ == "__main__":
    raise SystemExit(main())
