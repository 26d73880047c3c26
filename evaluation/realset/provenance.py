"""The provenance table: where each real digit comes from and what it shows.

One row per digit in `provenance.csv` beside this file. The images themselves are
never committed; `build` rebuilds them from snapshots of the listed repositories.
`read_provenance` parses and validates the whole table and names every bad row.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TABLE = Path(__file__).with_name("provenance.csv")
FIELDS = (
    "id",
    "repository",
    "commit",
    "path",
    "crop",
    "label",
    "style",
    "source_sha256",
    "licence",
    "notes",
)
# photo: phone/camera photo of paper; scan: scanner or flat grey crop of paper;
# canvas: drawn digitally; colour: coloured ink or paper; low_contrast: faint
# pencil/grey pen, shadows, gradients.
STYLES = ("photo", "scan", "canvas", "colour", "low_contrast")

_ID = re.compile(r"r\d{4}")
_REPOSITORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.][A-Za-z0-9_.-]*")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ProvenanceError(ValueError):
    """The table is malformed; the message names the row and the field."""


Crop = tuple[int, int, int, int]


@dataclass(frozen=True)
class ProvenanceRow:
    id: str
    repository: str  # owner/name
    commit: str  # 40 hex digits
    path: str  # inside the repository at that commit
    crop: Crop | None  # (x0, y0, x1, y1) in the upright image (EXIF orientation applied)
    label: int
    style: str
    source_sha256: str  # of the file as stored in the repository
    licence: str
    notes: str

    @property
    def mirror_name(self) -> str:
        """The folder name a snapshot of the repository has under the mirror dir."""
        return self.repository.replace("/", "+")


def parse_crop(text: str) -> Crop | None:
    """'x0,y0,x1,y1' -> a box with x0 < x1 and y0 < y1; '' -> None."""
    if not text.strip():
        return None
    parts = text.split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"crop {text!r} is not 'x0,y0,x1,y1' (four non-negative integers)")
    x0, y0, x1, y1 = (int(p) for p in parts)
    if x0 >= x1 or y0 >= y1:
        raise ValueError(f"crop {text!r} is empty: need x0 < x1 and y0 < y1")
    return (x0, y0, x1, y1)


def format_crop(crop: Crop | None) -> str:
    return "" if crop is None else ",".join(str(v) for v in crop)


def _row(record: dict[str, str], line: int) -> ProvenanceRow:
    def bad(field: str, why: str) -> ProvenanceError:
        return ProvenanceError(f"provenance line {line} ({record.get('id')!r}): {field} {why}")

    checks = (
        ("id", _ID, "must look like r0001"),
        ("repository", _REPOSITORY, "must be owner/name"),
        ("commit", _COMMIT, "must be 40 lowercase hex digits"),
        ("source_sha256", _SHA256, "must be 64 lowercase hex digits"),
    )
    for field, pattern, why in checks:
        if not pattern.fullmatch(record[field]):
            raise bad(field, f"{record[field]!r} {why}")
    path = record["path"]
    if not path or path.startswith("/") or ".." in path.split("/"):
        raise bad("path", f"{path!r} must be a relative path inside the repository")
    if record["label"] not in {str(d) for d in range(10)}:
        raise bad("label", f"{record['label']!r} must be one digit 0-9")
    if record["style"] not in STYLES:
        raise bad("style", f"{record['style']!r} must be one of {', '.join(STYLES)}")
    if not record["licence"].strip():
        raise bad("licence", "is empty (write 'unknown' when the repository has none)")
    try:
        crop = parse_crop(record["crop"])
    except ValueError as error:
        raise bad("crop", str(error)) from error
    return ProvenanceRow(
        id=record["id"],
        repository=record["repository"],
        commit=record["commit"],
        path=path,
        crop=crop,
        label=int(record["label"]),
        style=record["style"],
        source_sha256=record["source_sha256"],
        licence=record["licence"].strip(),
        notes=record["notes"].strip(),
    )


def parse_provenance(lines: Iterable[str]) -> list[ProvenanceRow]:
    """Parse CSV text; raise ProvenanceError on the first malformed row or duplicate."""
    reader = csv.DictReader(lines)
    if tuple(reader.fieldnames or ()) != FIELDS:
        raise ProvenanceError(f"provenance header is {reader.fieldnames}, expected {list(FIELDS)}")
    rows: list[ProvenanceRow] = []
    ids: set[str] = set()
    sources: set[tuple[str, str, Crop | None]] = set()
    for record in reader:
        row = _row(record, reader.line_num)
        if row.id in ids:
            raise ProvenanceError(f"provenance line {reader.line_num}: duplicate id {row.id}")
        key = (row.repository, row.path, row.crop)
        if key in sources:
            raise ProvenanceError(
                f"provenance line {reader.line_num} ({row.id}): {row.repository}:{row.path} "
                f"crop {format_crop(row.crop) or 'none'} is listed twice"
            )
        ids.add(row.id)
        sources.add(key)
        rows.append(row)
    return rows


def read_provenance(path: Path = TABLE) -> list[ProvenanceRow]:
    """The rows of the committed table (or another file in the same format)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return parse_provenance(handle)


def write_provenance(rows: Iterable[ProvenanceRow], path: Path = TABLE) -> None:
    """Write rows in the table's format (used when the table is grown)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(FIELDS)
        for row in rows:
            writer.writerow(
                (
                    row.id,
                    row.repository,
                    row.commit,
                    row.path,
                    format_crop(row.crop),
                    row.label,
                    row.style,
                    row.source_sha256,
                    row.licence,
                    row.notes,
                )
            )
