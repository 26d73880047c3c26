"""MNIST from its original IDX files, with numpy only (no torch import).

Usage::

    from training.data import load_mnist, train_val_split
    images, labels = load_mnist("train")          # uint8 (60000, 28, 28), uint8 (60000,)
    train_idx, val_idx = train_val_split(len(labels))

Where the files live, first match wins:

1. the ``data_dir`` argument (``--data-dir`` on the CLI),
2. the ``MNIST_DATA_DIR`` environment variable,
3. ``~/.cache/mnist-serve/mnist`` (downloaded there on first use).

Each file may be gzip-compressed (``*.gz``) or raw. The md5 is checked on the
UNCOMPRESSED bytes because mirrors re-compress the gzip streams, so hashes of
the .gz files differ between mirrors while the payload is identical.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

ENV_VAR = "MNIST_DATA_DIR"
DEFAULT_DIR = Path.home() / ".cache" / "mnist-serve" / "mnist"

# Tried in order; the S3 and GCS copies are the ones torchvision and TF use.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

IMAGE_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension

Split = Literal["train", "test"]


class MnistFormatError(ValueError):
    """An MNIST file exists but is truncated, corrupt or not the expected file."""


class MnistNotFoundError(FileNotFoundError):
    """The MNIST files are missing and could not be downloaded."""


@dataclass(frozen=True)
class IdxFile:
    stem: str  # e.g. "train-images-idx3-ubyte"; on disk as stem or stem + ".gz"
    md5: str  # of the uncompressed bytes
    magic: int
    count: int


FILES: dict[Split, tuple[IdxFile, IdxFile]] = {
    "train": (
        IdxFile("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", IMAGE_MAGIC, 60000),
        IdxFile("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", LABEL_MAGIC, 60000),
    ),
    "test": (
        IdxFile("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", IMAGE_MAGIC, 10000),
        IdxFile("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", LABEL_MAGIC, 10000),
    ),
}


def resolve_data_dir(data_dir: Path | None = None) -> Path:
    """The directory to read MNIST from: argument, else $MNIST_DATA_DIR, else the cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DIR


def read_idx(path: Path, magic: int, expected_md5: str | None = None) -> np.ndarray:
    """Parse one IDX file (gzip or raw) into a uint8 array, verifying magic, shape and md5.

    Raises MnistFormatError naming the file when anything does not match.
    """
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        # A truncated .gz surfaces here as EOFError ("Compressed file ended...").
        raise MnistFormatError(f"{path}: cannot decompress ({exc}); re-download it") from exc
    if len(raw) < 4:
        raise MnistFormatError(f"{path}: only {len(raw)} bytes, not an IDX file")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise MnistFormatError(
            f"{path}: magic number {found:#010x}, expected {magic:#010x} "
            f"({'images' if magic == IMAGE_MAGIC else 'labels'} file)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MnistFormatError(f"{path}: truncated header ({len(raw)} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_len = header + int(np.prod(shape))
    if len(raw) != expected_len:
        raise MnistFormatError(
            f"{path}: {len(raw)} bytes but header shape {shape} needs {expected_len} "
            "(truncated or corrupt file)"
        )
    if expected_md5 is not None:
        digest = hashlib.md5(raw).hexdigest()
        if digest != expected_md5:
            raise MnistFormatError(
                f"{path}: md5 of uncompressed bytes is {digest}, expected {expected_md5}"
            )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _download(directory: Path, spec: IdxFile) -> Path:
    """Fetch `spec` from the first mirror that answers; verify before keeping it."""
    from tqdm import tqdm  # imported lazily: only needed on a download

    directory.mkdir(parents=True, exist_ok=True)
    target = directory / (spec.stem + ".gz")
    errors: list[str] = []
    for mirror in MIRRORS:
        url = mirror + spec.stem + ".gz"
        partial = target.with_suffix(".gz.part")
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with (
                    partial.open("wb") as out,
                    tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar,
                ):
                    while block := response.read(1 << 16):
                        out.write(block)
                        bar.update(len(block))
            read_idx(partial, spec.magic, spec.md5)  # never keep a bad download
            partial.replace(target)
            return target
        except (urllib.error.URLError, OSError, MnistFormatError) as exc:
            errors.append(f"{url}: {exc}")
            partial.unlink(missing_ok=True)
    raise MnistNotFoundError(
        f"could not download {spec.stem}.gz ({'; '.join(errors)}).\n"
        + missing_files_help(directory)
    )


def missing_files_help(directory: Path) -> str:
    names = "\n".join(
        f"  {directory / (spec.stem + '.gz')}  (md5 of uncompressed bytes {spec.md5})"
        for pair in FILES.values()
        for spec in pair
    )
    return (
        f"Put the four MNIST IDX files (gzip or raw) here:\n{names}\n"
        f"or point --data-dir / ${ENV_VAR} at a directory that holds them."
    )


def load_mnist(
    split: Split, data_dir: Path | None = None, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels uint8 (N,) of the `split` set, verified."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    directory = resolve_data_dir(data_dir)
    image_spec, label_spec = FILES[split]
    arrays = []
    for spec in (image_spec, label_spec):
        path = _find(directory, spec.stem)
        if path is None:
            if not download:
                raise MnistNotFoundError(
                    f"{spec.stem}(.gz) not found in {directory}.\n" + missing_files_help(directory)
                )
            path = _download(directory, spec)
        array = read_idx(path, spec.magic, spec.md5)
        if array.shape[0] != spec.count:
            raise MnistFormatError(f"{path}: {array.shape[0]} records, expected {spec.count}")
        arrays.append(array)
    images, labels = arrays
    if images.shape[1:] != (28, 28):
        raise MnistFormatError(f"images have shape {images.shape}, expected (N, 28, 28)")
    return images, labels


def file_md5s(split: Split | None = None) -> dict[str, str]:
    """The verified md5s (uncompressed) of the files behind a split, for the model card."""
    splits: list[Split] = [split] if split else ["train", "test"]
    return {spec.stem: spec.md5 for s in splits for spec in FILES[s]}


def train_val_split(n: int, val_size: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed, seeded (train_indices, val_indices) into range(n); both sorted, disjoint."""
    if not 0 < val_size < n:
        raise ValueError(f"val_size must be in (0, {n}), got {val_size}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[val_size:]), np.sort(order[:val_size])
