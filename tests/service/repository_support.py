"""Temporary model repositories for the version tests, written the safe way.

Versions are copies of the shipped version 1 with their card's version updated,
written beside the repository and renamed into place (what docs/deployment.md
tells operators to do), so a poller never sees half a folder. A corrupt copy
has one byte flipped in the file its card says to serve.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from service.model_card import read_card, write_card
from tests.conftest import MODELS

NAME = "mnist-mlp"
SHIPPED = MODELS / NAME / "1"


def new_repository(root: Path) -> Path:
    """`root/models` holding version 1 of the shipped model."""
    repository = root / "models"
    (repository / NAME).mkdir(parents=True)
    add_version(repository, 1)
    return repository


def stage_version(repository: Path, version: int, *, corrupt: bool = False) -> Path:
    """A complete copy of the shipped model as `version`, outside the model folder."""
    staging = repository.parent / f"staging-{version}"
    shutil.copytree(SHIPPED, staging, ignore=shutil.ignore_patterns("report"))
    card = read_card(staging)
    write_card(staging, card.model_copy(update={"version": version}))
    if corrupt:
        served = card.variants[card.serving_variant].file if card.serving_variant else card.file
        data = bytearray((staging / served).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (staging / served).write_bytes(bytes(data))
    return staging


def add_version(repository: Path, version: int, *, corrupt: bool = False) -> Path:
    """Write the version elsewhere, then rename it into the repository (atomic)."""
    target = repository / NAME / str(version)
    stage_version(repository, version, corrupt=corrupt).rename(target)
    return target


def remove_version(repository: Path, version: int) -> None:
    """Rename the version out of the repository (atomic), then delete it."""
    gone = repository.parent / f"removed-{version}"
    (repository / NAME / str(version)).rename(gone)
    shutil.rmtree(gone)
