"""Rebuild the real set from repository snapshots into a git-ignored folder.

For each provenance row: find the snapshot of its repository under the mirror
dir (`<mirror>/<owner>+<name>/repo`, a bare or ordinary git dir), read the file
at the recorded commit with git, check its sha256 against the table, apply the
crop, and write `<out>/<id>.<ext>` plus `<out>/manifest.csv`. Whatever cannot be
rebuilt is reported with the reason; nothing is ever downloaded here.

An uncropped source is written byte for byte (EXIF and all, as a user would
upload it). A cropped one is cut from the upright image (EXIF orientation applied)
and written as PNG; any image whose longer side exceeds MAX_SIDE after the crop is
shrunk (Lanczos, deterministic) to MAX_SIDE and written as PNG.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from evaluation.realset.dataset import RealDigit, write_manifest
from evaluation.realset.provenance import Crop, ProvenanceRow

MAX_SIDE = 4096
_EXTENSIONS = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpg"),
    (b"GIF8", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tif"),
    (b"MM\x00*", "tif"),
)
_BUILT_NAME = re.compile(r"r\d{4}\.[a-z]+")


class SourceProblem(Exception):
    """One row could not be rebuilt; the message says why and what to do."""


@dataclass
class BuildReport:
    built: list[RealDigit] = field(default_factory=list)
    problems: list[tuple[ProvenanceRow, str]] = field(default_factory=list)
    shrunk: list[str] = field(default_factory=list)  # ids downscaled to MAX_SIDE


def find_git_dir(mirror_dir: Path, repository: str) -> Path | None:
    """The git dir of a snapshot of `owner/name` under `mirror_dir`, if there is one."""
    base = mirror_dir / repository.replace("/", "+")
    for candidate in (base / "repo" / ".git", base / "repo", base / ".git", base):
        if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
            return candidate
    return None


def read_source(git_dir: Path, commit: str, path: str) -> bytes:
    """The bytes of `path` at `commit` in the snapshot; SourceProblem if absent."""

    def git(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["git", "--git-dir", str(git_dir), *args], capture_output=True, check=False
        )

    if git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        raise SourceProblem(
            f"commit {commit[:12]} is not in the snapshot at {git_dir} (an older or "
            "rewritten snapshot: fetch the repository again)"
        )
    result = git("cat-file", "blob", f"{commit}:{path}")
    if result.returncode != 0:
        raise SourceProblem(f"{path} does not exist at commit {commit[:12]}")
    return result.stdout


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extension_of(data: bytes) -> str:
    for magic, extension in _EXTENSIONS:
        if data.startswith(magic):
            return extension
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    raise SourceProblem("the file is not a PNG, JPEG, GIF, BMP, TIFF or WebP image")


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def render(data: bytes, crop: Crop | None) -> tuple[bytes, str, bool]:
    """(file bytes, extension, shrunk?) for one source file and its optional crop."""
    extension = extension_of(data)
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        needs_shrink = max(opened.size) > MAX_SIDE  # EXIF rotation does not change this
        if crop is None and not needs_shrink:
            return data, extension, False
        image = ImageOps.exif_transpose(opened)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if crop is not None:
        _, _, x1, y1 = crop
        if x1 > image.width or y1 > image.height:
            raise SourceProblem(f"crop {crop} lies outside the {image.width}x{image.height} image")
        image = image.crop(crop)
    shrunk = max(image.size) > MAX_SIDE
    if shrunk:
        scale = MAX_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return _png(image), "png", shrunk


def build_one(row: ProvenanceRow, mirror_dir: Path, out: Path) -> tuple[RealDigit, bool]:
    """Rebuild one row into `out`; raise SourceProblem saying why it cannot be."""
    git_dir = find_git_dir(mirror_dir, row.repository)
    if git_dir is None:
        raise SourceProblem(
            f"no snapshot of {row.repository} under {mirror_dir} "
            f"(expected {mirror_dir / row.mirror_name}/repo): fetch that repository first"
        )
    data = read_source(git_dir, row.commit, row.path)
    actual = sha256_hex(data)
    if actual != row.source_sha256:
        raise SourceProblem(
            f"sha256 mismatch for {row.repository}:{row.path}@{row.commit[:12]}: "
            f"file has {actual[:16]}…, table says {row.source_sha256[:16]}…"
        )
    try:
        body, extension, shrunk = render(data, row.crop)
    except SourceProblem:
        raise
    except Exception as error:  # Pillow raises many types on a broken file
        raise SourceProblem(f"cannot decode {row.path}: {error}") from error
    target = out / f"{row.id}.{extension}"
    target.write_bytes(body)
    digit = RealDigit(row.id, target, row.label, row.style, row.repository, row.notes)
    return digit, shrunk


def build_set(
    rows: Iterable[ProvenanceRow], mirror_dir: Path, out: Path, *, progress: bool = False
) -> BuildReport:
    """Rebuild every row it can into `out` and write the manifest of what was built."""
    out.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    report = BuildReport()
    iterator: Iterable[ProvenanceRow] = rows
    if progress:
        from tqdm import tqdm

        iterator = tqdm(rows, desc="build", unit="digit")
    for row in iterator:
        try:
            digit, shrunk = build_one(row, mirror_dir, out)
        except SourceProblem as problem:
            report.problems.append((row, str(problem)))
            continue
        report.built.append(digit)
        if shrunk:
            report.shrunk.append(row.id)
    kept = {digit.path.name for digit in report.built}
    for stale in out.iterdir():  # files of rows that left the table or failed this time
        if _BUILT_NAME.fullmatch(stale.name) and stale.name not in kept:
            stale.unlink()
    write_manifest(out, report.built)
    return report
