"""The committed MNIST sample (see tests/data/README.md) and the full test set by path."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from training.data import IMAGE_MAGIC, LABEL_MAGIC, read_idx

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SAMPLE_IMAGES = DATA / "t10k-sample1000-images-idx3-ubyte.gz"
SAMPLE_LABELS = DATA / "t10k-sample1000-labels-idx1-ubyte.gz"
SAMPLE_IMAGES_MD5 = "bac4371a484d0b5651e81d99305acb5a"
SAMPLE_LABELS_MD5 = "556860b2f10365a8f7444c1e79c7e9af"
FULL_IMAGES = "t10k-images-idx3-ubyte.gz"
FULL_LABELS = "t10k-labels-idx1-ubyte.gz"

# A 28x28 MNIST "7" as PNG (the first test digit): the preprocessor's fast path.
SEVEN_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAAAwUlEQVR42mNgGDaAEUKFpD77sfTFHeyS9xQYGBg+"
    "X4UKPuk6w8DAwMDAAuGm6l/TMnSweCzLwPDntSTDozPIOhkYGBgYBA3PmDIw/Lh1XShnGi5nBP+9KIRLTuzl/2Ao"
    "kwlDMlv0/U1cGq1//rPD6fHWf7tZcclxnv1hhVNj3b9tOOW8f3+wxCUnfPffMlxyzKf/3VbGJan2758vLjn5B/+K"
    "GXF78Z8JLjnbT+iSSGFrw8Nw9wuKJAsy56LzO+ITGABpETyQcCy90wAAAABJRU5ErkJggg=="
)


def load_sample() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (1000, 28, 28), labels uint8 (1000,)): the first 1,000 MNIST test digits."""
    images = read_idx(SAMPLE_IMAGES, IMAGE_MAGIC, SAMPLE_IMAGES_MD5)
    labels = read_idx(SAMPLE_LABELS, LABEL_MAGIC, SAMPLE_LABELS_MD5)
    return images, labels


def load_digits(data_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST test digits (n, 28, 28) uint8 and labels (n,): the committed sample by
    default, or the full t10k set from `data_dir` (e.g. ../shared/data/mnist)."""
    if data_dir is None:
        return load_sample()
    images = read_idx(data_dir / FULL_IMAGES, IMAGE_MAGIC)
    labels = read_idx(data_dir / FULL_LABELS, LABEL_MAGIC)
    return images, labels
