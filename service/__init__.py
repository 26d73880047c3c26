"""Handwritten digit recognition service: FastAPI + onnxruntime, no torch."""
