"""All service settings in one typed object, read from `MNIST_*` environment variables.

Built by the app factory (never at import time), so tests can pass their own.
Every field has bounds and a one-line description; `mnist-serve --help` lists them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.packaged import default_model_repository
from service.versions import VersionPolicy

# The "uncertain" rule's thresholds when neither a setting nor the model card gives
# them: calibrated on the MNIST validation split with the shipped model
# (`python -m evaluation.uncertainty`; README, "Uncertain answers").
DEFAULT_UNCERTAIN_BELOW = 0.5
DEFAULT_UNCERTAIN_MARGIN = 0.8

# A model name or version becomes a path component: allow nothing that can escape.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MNIST_", extra="ignore", protected_namespaces=())

    # Model repository
    model_repository: Path = Field(
        default_factory=default_model_repository,
        description="Folder holding <model-name>/<version>/model.json and its ONNX files",
        json_schema_extra={
            "default_text": "./models if that folder exists, else the model installed with "
            "the package"
        },
    )
    model_name: str = Field("mnist-mlp", description="Which model of the repository to serve")
    model_version: int | None = Field(
        None,
        ge=1,
        description="Serve only this version (same as --version-policy specific:N)",
        json_schema_extra={"default_text": "the version policy decides"},
    )
    version_policy: str = Field(
        "latest",
        description="Versions to serve: 'latest', 'latest:N', 'all' or 'specific:1,3' "
        "(Triton's version_policy); unversioned requests go to the newest served",
    )
    model_variant: str | None = Field(
        None,
        description="Variant file of the card to serve (e.g. 'int8', or 'base' for model.onnx)",
        json_schema_extra={"default_text": "the card's serving_variant"},
    )

    # Model versions: hot load and unload
    repository_api: bool | None = Field(
        None,
        description="Triton's model repository API (/v2/repository/index, .../load, .../unload)",
        json_schema_extra={"default_text": "on only when API keys are set"},
    )
    repository_poll_s: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="Poll the repository this often (s) and serve what the version policy picks "
        "(Triton's poll mode); 0 = off",
    )
    repository_state_dir: Path | None = Field(
        None,
        description="Folder where the workers of one server share the serving set asked for "
        "through the repository API (default with --workers N: a fresh temp dir)",
    )
    repository_sync_timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="A load/unload answers once every worker serves the new set, or fails after "
        "this long",
    )

    # Batching
    batching: bool = Field(
        True, description="Dynamic micro-batching; off = one ORT call per request"
    )
    max_batch_size: int = Field(64, gt=0, le=4096, description="Most image rows in one ORT call")
    # 0 measured best (docs/benchmarks.md): batches still form while the previous one
    # runs, and a lone request is not held back waiting for company.
    max_queue_delay_ms: float = Field(
        0.0, ge=0, le=1000, description="Longest the oldest queued row waits for a batch to fill"
    )
    max_queue_size: int = Field(
        2048, gt=0, description="Most image rows waiting; beyond it requests get 429"
    )
    request_timeout_s: float = Field(
        5.0, gt=0, le=300, description="Deadline per request (504 after it); header can shorten"
    )

    # onnxruntime
    ort_intra_op_threads: int = Field(1, ge=0, le=64, description="ORT intra-op threads (0=auto)")
    ort_inter_op_threads: int = Field(1, ge=0, le=64, description="ORT inter-op threads (0=auto)")

    # Input limits
    max_upload_bytes: int = Field(
        10 * 1024 * 1024,
        gt=0,
        description="Largest request body; enforced while streaming (413)",
        json_schema_extra={"default_text": "10485760 (10 MiB)"},
    )
    max_image_pixels: int = Field(
        40_000_000, gt=0, description="Largest width*height of one image, checked before decoding"
    )
    max_batch_items: int = Field(256, gt=0, le=4096, description="Most images in one request")
    max_json_depth: int = Field(8, gt=0, le=64, description="Deepest JSON nesting accepted")
    # One full batch running. A refusal is written at the end of an event-loop turn,
    # and a turn carries the work of up to this many requests: 128 made the refusal
    # p99 at 1,024 connections 49-53 ms, 64 made it 21-45 ms (docs/reliability.md,
    # "Tuning").
    max_concurrent_requests: int = Field(
        64,
        gt=0,
        description="Requests run at once; beyond it (and a full line) 429 from the request "
        "head, and the client's next request on that connection waits its turn",
    )
    # A burst at moderate load waits here instead of being refused: without the line,
    # 64 running refused 11 of 89,278 requests of a soak at 70% of capacity.
    max_waiting_requests: int = Field(
        64,
        ge=0,
        description="Requests past max_concurrent_requests that wait (body read) for a "
        "free slot, first come first served, instead of a 429",
    )
    body_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Slow clients: the whole body must arrive within this (408)"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Slow clients: the request head must arrive within this"
    )
    max_connections: int = Field(
        4096,
        gt=0,
        description="Open connections per worker (also the listen backlog); beyond it a new "
        "connection's first request gets 503 and close. Raise `ulimit -n` above it",
    )

    # Open Inference Protocol over gRPC
    grpc_port: int = Field(
        8001, ge=0, le=65535, description="gRPC port of the inference protocol (0 = no gRPC)"
    )
    grpc_host: str | None = Field(
        None, description="Interface gRPC listens on; default: the same as --host"
    )
    grpc_max_message_bytes: int = Field(
        16 * 1024 * 1024,
        gt=0,
        le=1024 * 1024 * 1024,
        description="Largest gRPC request or answer message (RESOURCE_EXHAUSTED beyond it)",
    )

    # Security
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys; empty = authentication off",
        json_schema_extra={"default_text": "none"},
    )
    api_keys_file: Path | None = Field(None, description="File with one API key per line")
    metrics_require_key: bool = Field(False, description="Require an API key on /metrics too")

    # Observability
    low_confidence_threshold: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Predictions under this confidence are counted in "
        "mnist_low_confidence_predictions_total (a drift signal for operators)",
    )
    uncertain_below: float | None = Field(
        None,
        ge=0,
        le=1,
        description="An answer is marked uncertain when its top probability is under this",
        json_schema_extra={
            "default_text": "the model card's uncertainty.min_probability, else "
            f"{DEFAULT_UNCERTAIN_BELOW:g}"
        },
    )
    uncertain_margin: float | None = Field(
        None,
        ge=0,
        le=1,
        description="... or when the top two probabilities are closer than this",
        json_schema_extra={
            "default_text": "the model card's uncertainty.min_margin (0 when its rule has "
            f"none), else {DEFAULT_UNCERTAIN_MARGIN:g}"
        },
    )
    log_level: str = Field("info", description="Python log level of the JSON logs")
    access_log: bool = Field(True, description="One JSON line per request")

    # Lifecycle
    shutdown_grace_s: float = Field(
        20.0,
        gt=0,
        le=600,
        description="After SIGTERM: the whole drain (delay included) finishes accepted work "
        "within this, then the process exits",
    )
    drain_delay_s: float = Field(
        0.0,
        ge=0,
        le=60,
        description="After SIGTERM: keep listening (answering 503) this long before new "
        "connections are refused",
    )

    @field_validator("model_name")
    @classmethod
    def _safe_model_name(cls, value: str) -> str:
        if not SAFE_NAME.fullmatch(value):
            raise ValueError("model_name may hold only letters, digits, '.', '_' and '-'")
        return value

    @field_validator("version_policy")
    @classmethod
    def _valid_policy(cls, value: str) -> str:
        return str(VersionPolicy.parse(value))

    @model_validator(mode="after")
    def _one_way_to_pick_versions(self) -> Self:
        if self.model_version is not None and self.version_policy != "latest":
            raise ValueError("set model_version or version_policy, not both")
        return self

    def served_policy(self) -> VersionPolicy:
        """The version policy, with `model_version` as shorthand for specific:N."""
        if self.model_version is not None:
            return VersionPolicy.specific([self.model_version])
        return VersionPolicy.parse(self.version_policy)

    def repository_api_enabled(self) -> bool:
        """Off unless asked for, or unless keys protect it (it changes what is served)."""
        if self.repository_api is not None:
            return self.repository_api
        return bool(self.api_keys) or self.api_keys_file is not None

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    def load_api_keys(self) -> list[str]:
        """All configured keys, from the variable and the file; never logged."""
        keys = [key.get_secret_value() for key in self.api_keys]
        if self.api_keys_file is not None:
            lines = self.api_keys_file.read_text().splitlines()
            keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        return keys
