"""Shared fixtures: the committed 1,000-digit MNIST sample (tests/data), no network needed."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from evaluation.samples import load_sample


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # The suite shares 2 cores with other jobs; two spinning OpenMP threads there
    # run ~10x slower than one, and these tensors are tiny anyway.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def sample() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (1000, 28, 28), labels uint8 (1000,)): the first 1,000 MNIST test digits."""
    return load_sample()
