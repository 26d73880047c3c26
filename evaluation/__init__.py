"""What tests and benchmarks share: the committed MNIST sample, upload renderers,
a live-server helper and a load generator. Nothing here imports from `tests/`.
"""
