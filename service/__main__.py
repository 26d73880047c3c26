"""Start the service: `mnist-serve [--host H] [--port P] [--workers N] [--max-batch-size ...]`.

Every setting is a flag and an `MNIST_*` environment variable (flags win).
With `--workers N`, N worker processes share one listening socket
(`service.supervisor`); Prometheus metrics are then merged across them through
a fresh multiprocess directory.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from service.config import Settings
from service.errors import ModelLoadError


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


def prepare_metrics_dir(options: ServeOptions) -> None:
    """A clean multiprocess directory: stale files from a previous run would be summed in."""
    folder = options.metrics_dir or Path(tempfile.mkdtemp(prefix="mnist-metrics-"))
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def prepare_state_dir(settings: Settings) -> Path:
    """Where the workers share the serving set the repository API asked for: fresh per
    start, since a restarted server begins again from its version policy."""
    folder = settings.repository_state_dir or Path(tempfile.mkdtemp(prefix="mnist-state-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob("worker-*.json"), folder / "desired.json"]:
        stale.unlink(missing_ok=True)
    return folder


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

    from service.logs import configure_logging
    from service.model import selected_folders, verify_model_files
    from service.server import bind_listener, serve_worker

    # Fail fast with one line: the model files (checksums, no session) and the port.
    try:
        folders = selected_folders(
            settings.model_repository, settings.model_name, settings.served_policy()
        )
        for folder in folders.values():
            verify_model_files(folder, settings.model_variant)
        listener = bind_listener(options.host, options.port)
    except (ModelLoadError, OSError) as error:
        print(f"mnist-serve: cannot start: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    configure_logging(settings.log_level)
    if options.workers > 1 or settings.repository_state_dir is not None:
        state_dir = prepare_state_dir(settings)
        settings = settings.model_copy(update={"repository_state_dir": state_dir})
    if options.workers == 1:
        serve_worker(settings, [listener])
        return
    prepare_metrics_dir(options)  # before any worker imports prometheus_client
    from service.supervisor import run_workers

    raise SystemExit(run_workers(settings, listener, options.workers))


if __name__ == "__main__":
    main()
