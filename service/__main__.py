"""Start the service: `mnist-serve [--host H] [--port P] [--workers N] [--max-batch-size ...]`.

Every setting is a flag and an `MNIST_*` environment variable (flags win).
With `--workers N` uvicorn runs N processes on one socket; Prometheus metrics
are then merged across them through a fresh multiprocess directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from service.config import Settings
from service.errors import ModelLoadError

APP_FACTORY = "service.app:create_app_from_env"


class ServeOptions(Settings):
    """Settings plus where to listen; parsed from flags, then MNIST_* variables."""

    model_config = SettingsConfigDict(
        env_prefix="MNIST_",
        extra="ignore",
        protected_namespaces=(),
        cli_parse_args=True,
        cli_kebab_case=True,
        cli_prog_name="mnist-serve",
        cli_implicit_flags=True,
    )

    host: str = Field("127.0.0.1", description="Interface to listen on (0.0.0.0 in containers)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    workers: int = Field(1, ge=1, le=64, description="Worker processes sharing the port")
    metrics_dir: Path | None = Field(
        None, description="Multiprocess metrics folder for --workers > 1 (default: a temp dir)"
    )


def export_to_environment(settings: Settings) -> None:
    """Hand flag values to worker processes, which build their Settings from MNIST_*."""
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, list):
            text = ",".join(
                v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in value
            )
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        os.environ[f"MNIST_{name.upper()}"] = text


def prepare_metrics_dir(options: ServeOptions) -> None:
    """A clean multiprocess directory: stale files from a previous run would be summed in."""
    folder = options.metrics_dir or Path(tempfile.mkdtemp(prefix="mnist-metrics-"))
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def main() -> None:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before onnxruntime is imported
    try:
        options = ServeOptions()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors()
        )
        print(f"mnist-serve: invalid setting: {problems}", file=sys.stderr)
        raise SystemExit(2) from None
    settings = Settings.model_validate(options.model_dump(include=set(Settings.model_fields)))

    # Fail fast with one line naming the file, before any worker starts.
    from service.model import OnnxModel, resolve_version_dir

    try:
        OnnxModel(
            resolve_version_dir(
                settings.model_repository, settings.model_name, settings.model_version
            ),
            variant=settings.model_variant,
        )
    except ModelLoadError as error:
        print(f"mnist-serve: cannot start: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    export_to_environment(settings)
    if options.workers > 1:
        prepare_metrics_dir(options)  # before any prometheus_client import in a worker

    import uvicorn

    from service.logs import configure_logging
    from service.server import GuardedHttpToolsProtocol

    configure_logging(settings.log_level)
    # uvicorn re-raises SIGTERM after its graceful shutdown; a drained stop is a success.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=options.host,
        port=options.port,
        workers=options.workers,
        loop="uvloop",
        http=GuardedHttpToolsProtocol,
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 1,
        timeout_keep_alive=5,
        limit_concurrency=settings.max_connections,
    )


if __name__ == "__main__":
    main()
