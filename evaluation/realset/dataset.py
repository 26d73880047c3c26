"""A built real set on disk: the image files plus `manifest.csv`, and its loader.

`build` writes `<folder>/<id>.<ext>` for each digit and a manifest naming each
file with its label, style and source, so a folder can be read without the
provenance table (a copy, a subset, a set built from another table).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from evaluation.realset.provenance import STYLES

MANIFEST = "manifest.csv"
MANIFEST_FIELDS = ("id", "file", "label", "style", "source", "notes")
DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "data" / "real"


@dataclass(frozen=True)
class RealDigit:
    """One built image of a real handwritten digit."""

    id: str
    path: Path
    label: int
    style: str  # one of provenance.STYLES
    source: str  # owner/name of the repository it came from
    notes: str = ""

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


class RealSetMissing(FileNotFoundError):
    """The folder has no built set; the message says how to build one."""


def write_manifest(folder: Path, digits: Iterable[RealDigit]) -> Path:
    path = folder / MANIFEST
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MANIFEST_FIELDS)
        for digit in digits:
            writer.writerow(
                (digit.id, digit.path.name, digit.label, digit.style, digit.source, digit.notes)
            )
    return path


def load_real_set(folder: Path = DEFAULT_FOLDER) -> list[RealDigit]:
    """The digits listed in `folder/manifest.csv` whose files exist, in manifest order.

    Raises RealSetMissing when there is no manifest, and ValueError on a malformed
    row or a listed file that is missing (a half-copied folder must not quietly
    score as a smaller set).
    """
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise RealSetMissing(
            f"no real set at {folder} ({MANIFEST} missing): fetch the repositories listed "
            "in evaluation/realset/provenance.csv, then run `python -m evaluation.realset build`"
        )
    digits: list[RealDigit] = []
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != MANIFEST_FIELDS:
            raise ValueError(f"{manifest}: header {reader.fieldnames}, expected {MANIFEST_FIELDS}")
        for record in reader:
            where = f"{manifest} line {reader.line_num}"
            if record["label"] not in {str(d) for d in range(10)}:
                raise ValueError(f"{where}: label {record['label']!r} is not a digit")
            if record["style"] not in STYLES:
                raise ValueError(f"{where}: style {record['style']!r} is not one of {STYLES}")
            path = folder / record["file"]
            if path.parent != folder or not path.is_file():
                raise ValueError(f"{where}: file {record['file']!r} is missing from {folder}")
            digits.append(
                RealDigit(
                    id=record["id"],
                    path=path,
                    label=int(record["label"]),
                    style=record["style"],
                    source=record["source"],
                    notes=record["notes"],
                )
            )
    return digits
