"""Training package: MNIST -> MLP (torch) -> ONNX + model card.

Importing this package must not import torch: `training.data` is numpy-only so
tests, benchmarks and `evaluation` can use it anywhere.
"""
