"""The synthetic field benchmark (`training.field`): end-to-end accuracy on real-looking uploads.

    python -m benchmarks.field_benchmark --model models/mnist-mlp/1/model.onnx --n 2600
    python -m benchmarks.field_benchmark --url http://127.0.0.1:8000 --n 2600

Same flags as `python -m training.field`; kept here so every benchmark lives in
`benchmarks/`. With `--url` each file goes through POST /v1/predict of a
running service, so the number includes the real HTTP parsing.
"""

from __future__ import annotations

from training.field import main

if __name__ == "__main__":
    raise SystemExit(main())
