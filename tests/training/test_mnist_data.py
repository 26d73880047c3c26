"""training.data: the IDX reader, checksums, data-dir resolution, download and split."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluation.samples import (
    SAMPLE_IMAGES,
    SAMPLE_IMAGES_MD5,
    SAMPLE_LABELS,
    SAMPLE_LABELS_MD5,
)
from training import data
from training.data import (
    IMAGE_MAGIC,
    LABEL_MAGIC,
    IdxFile,
    MnistFormatError,
    MnistNotFoundError,
    load_mnist,
    read_idx,
    train_val_split,
)

FULL_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"


def _raw(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def test_reads_committed_gzip_sample(sample: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = sample
    assert images.shape == (1000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (1000,) and labels.dtype == np.uint8
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # MNIST's famous first row
    assert np.bincount(labels).tolist() == [85, 126, 116, 107, 110, 87, 87, 99, 89, 94]
    assert images.max() == 255 and images[:, 0, :].max() == 0  # white on black, empty top row


def test_reads_uncompressed_file(tmp_path: Path, sample: tuple[np.ndarray, np.ndarray]) -> None:
    raw = tmp_path / "t10k-images-idx3-ubyte"
    raw.write_bytes(_raw(SAMPLE_IMAGES))
    np.testing.assert_array_equal(read_idx(raw, IMAGE_MAGIC, SAMPLE_IMAGES_MD5), sample[0])


@pytest.mark.parametrize("compressed", [True, False])
def test_truncated_file_names_the_file(tmp_path: Path, compressed: bool) -> None:
    payload = _raw(SAMPLE_IMAGES)
    path = tmp_path / ("cut.gz" if compressed else "cut")
    if compressed:
        path.write_bytes(gzip.compress(payload)[:5000])  # gzip stream cut mid-way
    else:
        path.write_bytes(payload[:-100])  # valid header, missing pixels
    with pytest.raises(MnistFormatError, match=str(path)):
        read_idx(path, IMAGE_MAGIC)


def test_wrong_magic_is_reported(tmp_path: Path) -> None:
    # A labels file where an images file is expected: the classic mix-up.
    with pytest.raises(MnistFormatError, match=r"magic number 0x00000801, expected 0x00000803"):
        read_idx(SAMPLE_LABELS, IMAGE_MAGIC)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00\x01")
    with pytest.raises(MnistFormatError, match="not an IDX file"):
        read_idx(junk, IMAGE_MAGIC)


def test_md5_mismatch_is_reported(tmp_path: Path) -> None:
    payload = bytearray(_raw(SAMPLE_LABELS))
    payload[-1] = (payload[-1] + 1) % 10  # one corrupted label, same length and header
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(MnistFormatError, match=f"labels.gz.*expected {SAMPLE_LABELS_MD5}"):
        read_idx(path, LABEL_MAGIC, SAMPLE_LABELS_MD5)


@pytest.fixture
def sample_as_test_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the 'test' split mean the committed sample files (names, md5s, counts)."""
    specs = (
        IdxFile("t10k-sample1000-images-idx3-ubyte", SAMPLE_IMAGES_MD5, IMAGE_MAGIC, 1000),
        IdxFile("t10k-sample1000-labels-idx1-ubyte", SAMPLE_LABELS_MD5, LABEL_MAGIC, 1000),
    )
    monkeypatch.setitem(data.FILES, "test", specs)


@pytest.mark.usefixtures("sample_as_test_split")
def test_data_dir_argument_then_env_var(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    monkeypatch.setenv("MNIST_DATA_DIR", str(SAMPLE_IMAGES.parent))
    _, labels = load_mnist("test", download=False)  # from the environment variable
    np.testing.assert_array_equal(labels, sample[1])
    assert data.resolve_data_dir(tmp_path) == tmp_path  # the argument wins
    monkeypatch.delenv("MNIST_DATA_DIR")
    assert data.resolve_data_dir() == data.DEFAULT_DIR


@pytest.mark.usefixtures("sample_as_test_split")
def test_download_verifies_and_keeps_good_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    # A file:// "mirror" exercises the real download code without network.
    monkeypatch.setattr(data, "MIRRORS", (SAMPLE_IMAGES.parent.as_uri() + "/",))
    images, _ = load_mnist("test", tmp_path)
    np.testing.assert_array_equal(images, sample[0])
    assert (tmp_path / SAMPLE_IMAGES.name).is_file()
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.usefixtures("sample_as_test_split")
def test_no_network_says_which_files_to_put_where(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(data, "MIRRORS", ((tmp_path / "no-mirror").as_uri() + "/",))
    with pytest.raises(MnistNotFoundError) as error:
        load_mnist("test", tmp_path / "mnist")
    message = str(error.value)
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in message
    assert "6bbc9ace898e44ae57da46a324031adb" in message  # so people can check their copy
    assert "MNIST_DATA_DIR" in message
    with pytest.raises(MnistNotFoundError, match="not found in"):
        load_mnist("test", tmp_path / "mnist", download=False)


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="split"):
        load_mnist("validation", download=False)  # type: ignore[arg-type]


def test_split_is_deterministic_disjoint_and_complete() -> None:
    train_a, val_a = train_val_split(60000)
    train_b, val_b = train_val_split(60000)
    np.testing.assert_array_equal(val_a, val_b)
    np.testing.assert_array_equal(train_a, train_b)
    assert len(val_a) == 5000 and len(train_a) == 55000
    assert np.intersect1d(train_a, val_a).size == 0
    assert np.union1d(train_a, val_a).size == 60000
    assert not np.array_equal(train_val_split(60000, seed=1)[1], val_a)
    # Pinned values: a silent change of the split would leak validation digits into training.
    assert val_a[:5].tolist() == [9, 24, 49, 60, 65]
    with pytest.raises(ValueError):
        train_val_split(100, val_size=100)


def test_data_module_does_not_import_torch() -> None:
    code = "import sys, training.data; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not FULL_MNIST.is_dir(), reason="full MNIST not beside the checkout")
def test_full_dataset_matches_published_counts() -> None:
    _, labels = load_mnist("train", FULL_MNIST, download=False)
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # from the README
    assert np.bincount(labels).tolist() == counts
    images, _ = load_mnist("test", FULL_MNIST, download=False)
    assert images.shape == (10000, 28, 28)
