"""Where the committed MNIST sample lives and its checksums (see tests/data/README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data import IMAGE_MAGIC, LABEL_MAGIC, read_idx

DATA = Path(__file__).resolve().parents[1] / "data"
SAMPLE_IMAGES = DATA / "t10k-sample1000-images-idx3-ubyte.gz"
SAMPLE_LABELS = DATA / "t10k-sample1000-labels-idx1-ubyte.gz"
SAMPLE_IMAGES_MD5 = "bac4371a484d0b5651e81d99305acb5a"
SAMPLE_LABELS_MD5 = "556860b2f10365a8f7444c1e79c7e9af"
REPO = Path(__file__).resolve().parents[2]


def load_sample() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (1000, 28, 28), labels uint8 (1000,)): the first 1,000 MNIST test digits."""
    images = read_idx(SAMPLE_IMAGES, IMAGE_MAGIC, SAMPLE_IMAGES_MD5)
    labels = read_idx(SAMPLE_LABELS, LABEL_MAGIC, SAMPLE_LABELS_MD5)
    return images, labels
