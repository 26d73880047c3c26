"""`mnist-serve`'s flags: one per setting, built from `Settings`, with plain help.

Every setting is a flag and an `MNIST_*` environment variable; a flag wins over
the variable, the variable over the default. `--help` shows, for each flag, a
plain type, what it does, its variable and its default (`default_text`, also
used by the documentation tests, so the README's defaults cannot drift from
these).
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsConfigDict

from service.config import Settings

PROG = "mnist-serve"
ENV_PREFIX = "MNIST_"


class ServeOptions(Settings):
    """Settings plus where to listen; read from flags (given as arguments) and MNIST_*."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", protected_namespaces=()
    )

    host: str = Field("127.0.0.1", description="Interface to listen on (0.0.0.0 in containers)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    workers: int = Field(1, ge=1, le=64, description="Worker processes sharing the port")
    metrics_dir: Path | None = Field(
        None,
        description="Folder for merging the workers' metrics when --workers > 1",
        json_schema_extra={"default_text": "a new temporary folder"},
    )


def package_version() -> str:
    try:
        return version("mnist-serve")
    except PackageNotFoundError:  # a checkout that was never installed
        return "0+unknown"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def variable(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _base_type(annotation: Any) -> Any:
    """`int | None` -> int; `Annotated[list[SecretStr], ...]` -> list[SecretStr]."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return annotation


def type_name(field: FieldInfo) -> str:
    kind = _base_type(field.annotation)
    if kind is int:
        return "INT"
    if kind is float:
        return "NUMBER"
    if kind is Path:
        return "PATH"
    if typing.get_origin(kind) is list and typing.get_args(kind) == (SecretStr,):
        return "KEY,KEY,..."
    return "TEXT"


def is_switch(field: FieldInfo) -> bool:
    return _base_type(field.annotation) is bool


def default_text(name: str, options: type[Settings] = ServeOptions) -> str:
    """The default of setting `name` as a person reads it (help and documentation)."""
    field = options.model_fields[name]
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("default_text"), str):
        return str(extra["default_text"])
    value = field.get_default(call_default_factory=True)
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == []:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve the handwritten-digit model over HTTP: a draw-a-digit page at /, "
        "the API at /v1 and /v2, its documentation at /docs, Prometheus metrics at /metrics.",
        epilog="Every flag is also an environment variable (shown in brackets); a flag wins "
        "over its variable. Example: MNIST_WORKERS=2 mnist-serve --port 8080",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    own = [name for name in ServeOptions.model_fields if name not in Settings.model_fields]
    groups = [
        (parser.add_argument_group("where to listen"), own),
        (parser.add_argument_group("settings"), list(Settings.model_fields)),
    ]
    for group, names in groups:
        for name in names:
            field = ServeOptions.model_fields[name]
            about = (field.description or "").replace("%", "%%")
            help_text = f"{about} [{variable(name)}; default: {default_text(name)}]"
            if is_switch(field):
                group.add_argument(
                    flag(name),
                    action=argparse.BooleanOptionalAction,
                    default=argparse.SUPPRESS,
                    help=help_text,
                )
            else:
                group.add_argument(
                    flag(name), metavar=type_name(field), default=argparse.SUPPRESS, help=help_text
                )
    return parser


def describe(error: ValidationError) -> str:
    """A pydantic validation error as the flags and variables a person typed."""
    problems = []
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else ""
        where = f"{flag(name)} / {variable(name)}" if name in ServeOptions.model_fields else name
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


def parse_options(argv: list[str] | None = None) -> ServeOptions:
    """Flags, then MNIST_* variables, then defaults. Exits 2 with one line on a bad value."""
    given = vars(build_parser().parse_args(argv))
    try:
        return ServeOptions(**given)
    except ValidationError as error:
        print(f"{PROG}: invalid setting: {describe(error)}", file=sys.stderr)
        raise SystemExit(2) from None
