"""Training package: MNIST -> MLP (torch) -> ONNX + model card.

Importing this package must not import torch: `training.data` and
`training.field` are numpy-only so tests and benchmarks can use them anywhere.
"""
