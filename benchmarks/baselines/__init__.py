"""What a user would run instead of mnist-serve, for side-by-side benchmarks.

Each app serves the same ONNX file as the service, in one uvicorn worker. They
are deliberately plain: no batching, no limits, no metrics, no real-photo
preprocessing. They are yardsticks, not products.
"""
