# mnist-serve: the serving image (FastAPI + onnxruntime + the model, no torch).
#
#   docker build -t mnist-serve .
#   docker run --rm -p 127.0.0.1:8000:8000 mnist-serve
#
# Settings come from MNIST_* environment variables (see `mnist-serve --help`),
# e.g. -e MNIST_WORKERS=2 -e MNIST_MAX_BATCH_SIZE=32. Swap the model by mounting
# another repository over /app/models (or setting MNIST_MODEL_REPOSITORY).
ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: a virtualenv holding only the serving dependencies + the package
# (fastapi-offline among them: the Swagger UI and ReDoc files /docs serves offline)
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so code edits reuse this layer.
# Only the base dependencies: never the [train] extra (torch) nor [dev].
COPY pyproject.toml README.md ./
RUN mkdir service && pip install . && pip uninstall -y mnist-serve
COPY service/ service/
# setup.py copies the served model file and its card into the package; the runtime
# stage still gets the whole repository at /app/models (mount another one over it).
COPY setup.py MANIFEST.in ./
COPY models/ models/
# Then trim what serving never loads: the installers, test suites, and onnxruntime's
# offline model tools (transformers/quantization/tools: used to build models, not run them).
RUN pip install --no-deps . \
 && pip uninstall -y pip setuptools wheel \
 && site=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
 && rm -rf /src/build "$site"/onnxruntime/transformers "$site"/onnxruntime/quantization \
        "$site"/onnxruntime/tools \
 && find "$site" -depth -type d \( -name tests -o -name test \) -not -path '*/numpy/*' \
        -exec rm -rf {} + \
 && (cd / && python3 -c "import onnxruntime, numpy, PIL, uvloop, httptools, service.app") \
 && (cd / && python3 -c "from importlib import resources as r; \
        s = r.files('fastapi_offline') / 'static'; \
        assert all((s / f).is_file() for f in ('swagger-ui-bundle.js', 'swagger-ui.css', \
        'redoc.standalone.js')), 'the /docs assets are missing'") \
 && ! python3 -c "import torch" 2>/dev/null

# ---- runtime: the same Python, the venv, the model; runs as a non-root user
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 mnist \
 && useradd --system --uid 10001 --gid mnist --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin mnist
COPY --from=builder /opt/venv /opt/venv
# Root-owned and read-only for the service user: the model is never written.
COPY models/ /app/models/
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    MNIST_MODEL_REPOSITORY=/app/models \
    MNIST_WORKERS=1 \
    MNIST_SHUTDOWN_GRACE_S=20 \
    MNIST_DRAIN_DELAY_S=0
USER 10001:10001
EXPOSE 8000 8001
# Ready = model loaded and warm; 503 while loading or draining. No curl needed.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
# Exec form: mnist-serve is PID 1 and gets SIGTERM itself, so `docker stop` drains
# (readiness off, in-flight requests finish, exit 0). Give it the grace period:
# docker stop -t 30 / compose stop_grace_period / k8s terminationGracePeriodSeconds.
STOPSIGNAL SIGTERM
CMD ["mnist-serve", "--host", "0.0.0.0", "--port", "8000"]
