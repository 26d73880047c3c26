"""The build step on a tiny git repository made here: files are read at the
recorded commit, checked against their sha256, cropped, and every failure is
reported with its reason; the built folder loads back with its labels."""

from __future__ import annotations

import hashlib
import io
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.realset.build import MAX_SIDE, build_set
from evaluation.realset.dataset import RealSetMissing, load_real_set
from evaluation.realset.provenance import ProvenanceRow

REPOSITORY = "someone/digits"


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    image = Image.new(mode, size, "white")
    for x in range(size[0] // 4, size[0] // 2):  # a dark bar to tell crops apart
        image.putpixel((x, size[1] // 2), (0, 0, 0) if mode == "RGB" else 0)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _git(work: Path, *args: str) -> str:
    result = subprocess.run(
        [
            "git",
            "-C",
            str(work),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@dataclass(frozen=True)
class Mirror:
    dir: Path
    commit: str
    files: dict[str, bytes]


@pytest.fixture
def mirror(tmp_path: Path) -> Mirror:
    """A mirror dir holding one snapshot (`<owner>+<name>/repo`) with two images."""
    mirror_dir = tmp_path / "mirror"
    work = mirror_dir / REPOSITORY.replace("/", "+") / "repo"
    (work / "photos").mkdir(parents=True)
    files = {"photos/7.png": _png((40, 30)), "photos/big.png": _png((MAX_SIDE + 40, 8), "L")}
    for name, data in files.items():
        (work / name).write_bytes(data)
    _git(work, "init", "-q")
    _git(work, "add", ".")
    _git(work, "commit", "-q", "-m", "digits")
    commit = _git(work, "rev-parse", "HEAD")
    (work / "photos" / "7.png").write_bytes(b"changed later")  # the table pins the old one
    _git(work, "commit", "-qam", "overwrite")
    return Mirror(mirror_dir, commit, files)


def _row(id_: str, commit: str, path: str, data: bytes, **changes: object) -> ProvenanceRow:
    fields: dict[str, object] = {
        "id": id_,
        "repository": REPOSITORY,
        "commit": commit,
        "path": path,
        "crop": None,
        "label": 7,
        "style": "photo",
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "licence": "MIT",
        "notes": "",
    }
    fields.update(changes)
    return ProvenanceRow(**fields)  # type: ignore[arg-type]


def test_an_uncropped_file_is_copied_byte_for_byte(mirror: Mirror, tmp_path: Path) -> None:
    mirror_dir, commit, files = mirror.dir, mirror.commit, mirror.files
    report = build_set(
        [_row("r0001", commit, "photos/7.png", files["photos/7.png"])], mirror_dir, tmp_path / "out"
    )
    assert report.problems == []
    assert (tmp_path / "out" / "r0001.png").read_bytes() == files["photos/7.png"]


def test_the_crop_is_applied(mirror: Mirror, tmp_path: Path) -> None:
    mirror_dir, commit, files = mirror.dir, mirror.commit, mirror.files
    row = _row("r0002", commit, "photos/7.png", files["photos/7.png"], crop=(5, 10, 25, 22))
    report = build_set([row], mirror_dir, tmp_path / "out")
    assert report.problems == []
    with Image.open(tmp_path / "out" / "r0002.png") as built:
        assert built.size == (20, 12)
        expected = Image.open(io.BytesIO(files["photos/7.png"])).crop((5, 10, 25, 22))
        assert np.array_equal(np.asarray(built.convert("RGB")), np.asarray(expected.convert("RGB")))


def test_a_crop_outside_the_image_is_reported(mirror: Mirror, tmp_path: Path) -> None:
    mirror_dir, commit, files = mirror.dir, mirror.commit, mirror.files
    row = _row("r0003", commit, "photos/7.png", files["photos/7.png"], crop=(0, 0, 41, 30))
    report = build_set([row], mirror_dir, tmp_path / "out")
    ((_, why),) = report.problems
    assert "outside the 40x30 image" in why


def test_a_huge_source_is_shrunk_deterministically(mirror: Mirror, tmp_path: Path) -> None:
    mirror_dir, commit, files = mirror.dir, mirror.commit, mirror.files
    row = _row("r0004", commit, "photos/big.png", files["photos/big.png"])
    first = build_set([row], mirror_dir, tmp_path / "a")
    build_set([row], mirror_dir, tmp_path / "b")
    assert first.shrunk == ["r0004"]
    with Image.open(tmp_path / "a" / "r0004.png") as built:
        assert max(built.size) == MAX_SIDE
    first_bytes = (tmp_path / "a" / "r0004.png").read_bytes()
    assert first_bytes == (tmp_path / "b" / "r0004.png").read_bytes()


def test_every_failure_is_reported_with_its_reason(mirror: Mirror, tmp_path: Path) -> None:
    mirror_dir, commit, files = mirror.dir, mirror.commit, mirror.files
    good = files["photos/7.png"]
    rows = [
        _row("r0010", commit, "photos/7.png", good, source_sha256="0" * 64),
        _row("r0011", commit, "photos/7.png", good, repository="nobody/absent"),
        _row("r0012", commit, "photos/8.png", good),
        _row("r0013", "f" * 40, "photos/7.png", good),
        _row("r0014", commit, "photos/7.png", good, crop=(0, 0, 10, 10)),
    ]
    report = build_set(rows, mirror_dir, tmp_path / "out")
    reasons = {row.id: why for row, why in report.problems}
    assert set(reasons) == {"r0010", "r0011", "r0012", "r0013"}
    assert "sha256 mismatch" in reasons["r0010"] and "0000000000000000" in reasons["r0010"]
    assert "no snapshot of nobody/absent" in reasons["r0011"]
    assert "does not exist at commit" in reasons["r0012"]
    assert "is not in the snapshot" in reasons["r0013"]
    assert [digit.id for digit in report.built] == ["r0014"]
    assert not (tmp_path / "out" / "r0010.png").exists()


def test_the_built_folder_loads_back(mirror: Mirror, tmp_path: Path) -> None:
    mirror_dir, commit, files = mirror.dir, mirror.commit, mirror.files
    rows = [
        _row("r0020", commit, "photos/7.png", files["photos/7.png"]),
        _row(
            "r0021",
            commit,
            "photos/7.png",
            files["photos/7.png"],
            crop=(0, 0, 20, 20),
            label=1,
            style="canvas",
        ),
    ]
    build_set(rows, mirror_dir, tmp_path / "out")
    digits = load_real_set(tmp_path / "out")
    assert [(d.id, d.label, d.style, d.source) for d in digits] == [
        ("r0020", 7, "photo", REPOSITORY),
        ("r0021", 1, "canvas", REPOSITORY),
    ]
    assert digits[0].read_bytes() == files["photos/7.png"]


def test_a_folder_without_a_set_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(RealSetMissing, match=r"python -m evaluation\.realset build"):
        load_real_set(tmp_path)
