"""Which versions of a model exist in the repository, and which of them to serve.

A `VersionPolicy` picks the served versions from those present, like Triton's
`version_policy`: the newest (default), the newest N, all, or a listed set. It
is written as a setting (`latest`, `latest:2`, `all`, `specific:1,3`) or given
as Triton's JSON (`{"latest": {"num_versions": 2}}`, `{"all": {}}`,
`{"specific": {"versions": [1, 3]}}`) in a repository-API load request.

`snapshot` lists the version folders with a fingerprint of their files (names,
sizes, modification times). Polling compares two snapshots: a folder still
being copied changes between them, so nothing is loaded until the whole model
folder has stayed the same for one poll interval.

Knows nothing of onnxruntime, batching or HTTP.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from service.model_card import CARD_FILENAME

PolicyKind = Literal["latest", "all", "specific"]
Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class VersionPolicy:
    kind: PolicyKind = "latest"
    count: int = 1  # for "latest"
    versions: tuple[int, ...] = ()  # for "specific", ascending

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """`latest`, `latest:N`, `all` or `specific:V1,V2,...`."""
        kind, _, argument = text.strip().partition(":")
        kind = kind.strip().lower()
        try:
            if kind == "latest":
                return cls.latest(int(argument) if argument.strip() else 1)
            if kind == "all" and not argument.strip():
                return cls("all")
            if kind == "specific":
                return cls.specific(int(part) for part in argument.split(",") if part.strip())
        except ValueError as error:
            raise ValueError(f"version policy {text!r}: {error}") from None
        raise ValueError(
            f"version policy {text!r} is not one of 'latest', 'latest:N', 'all', 'specific:V1,V2'"
        )

    @classmethod
    def latest(cls, count: int = 1) -> VersionPolicy:
        if count < 1:
            raise ValueError("latest needs at least 1 version")
        return cls("latest", count=count)

    @classmethod
    def specific(cls, versions: Iterable[int]) -> VersionPolicy:
        chosen = tuple(sorted(set(versions)))
        if not chosen or chosen[0] < 1:
            raise ValueError("specific needs one or more versions >= 1")
        return cls("specific", versions=chosen)

    @classmethod
    def from_triton(cls, policy: Mapping[str, Any]) -> VersionPolicy:
        """Triton's `version_policy` JSON (numbers may be strings: protobuf JSON int64)."""
        if not isinstance(policy, Mapping) or len(policy) != 1:
            raise ValueError("version_policy must hold exactly one of latest, all, specific")
        ((kind, body),) = policy.items()
        body = body or {}
        if not isinstance(body, Mapping):
            raise ValueError(f"version_policy.{kind} must be an object")
        try:
            if kind == "latest":
                return cls.latest(int(body.get("num_versions", 1)))
            if kind == "all":
                return cls("all")
            if kind == "specific":
                return cls.specific(int(v) for v in body.get("versions", []))
        except (TypeError, ValueError) as error:
            raise ValueError(f"version_policy.{kind}: {error}") from None
        raise ValueError(f"unknown version_policy {kind!r}; use latest, all or specific")

    def select(self, available: Iterable[int]) -> list[int]:
        """The versions to serve among `available`, ascending (may be empty)."""
        present = sorted(set(available))
        if self.kind == "all":
            return present
        if self.kind == "latest":
            return present[-self.count :]
        return [v for v in present if v in self.versions]

    def __str__(self) -> str:
        if self.kind == "latest":
            return "latest" if self.count == 1 else f"latest:{self.count}"
        if self.kind == "specific":
            return "specific:" + ",".join(map(str, self.versions))
        return "all"


def version_folders(repository: Path, name: str) -> dict[int, Path]:
    """Every `<repository>/<name>/<N>/` holding a model card, by version."""
    model_dir = repository / name
    if not model_dir.is_dir():
        return {}
    return {
        int(child.name): child
        for child in model_dir.iterdir()
        if child.name.isdigit() and int(child.name) >= 1 and (child / CARD_FILENAME).is_file()
    }


def fingerprint(folder: Path) -> Fingerprint:
    """Names, sizes and modification times of every file under `folder`: changes while
    anything in it is still being written."""
    entries = []
    for root, _, files in os.walk(folder):
        for file in files:
            path = Path(root) / file
            try:
                stat = path.stat()
            except OSError:  # removed while we looked: the next snapshot differs anyway
                continue
            entries.append((str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


def snapshot(repository: Path, name: str) -> dict[int, Fingerprint]:
    """Every version folder of `name` with its fingerprint."""
    return {
        version: fingerprint(folder)
        for version, folder in version_folders(repository, name).items()
    }
