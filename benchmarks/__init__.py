"""Benchmarks of mnist-serve: `python -m benchmarks.run --quick|--full` (see docs/benchmarks.md)."""
