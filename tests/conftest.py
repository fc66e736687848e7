"""Shared fixtures: the golden vectors shipped in tests/golden and the real datasets."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_SHA256 = {  # from the golden README: the files are the reference's, unchanged
    "activations.npz": "eb3e944b40594d13c84de58e08265b9bf66724d50e3d1d853245f881cb828427",
    "dfa_mnist_epoch1.npz": "1dac2e837c0d9d73bfedadfd2a83797596cc7aed8859745faf2817d4119604e6",
    "bp_tiny.npz": "fc62aa2922594f017e6b406a9e58a3d30821397cf1527f68ea6c8fa0e9978396",
}


def load_golden(name: str) -> dict[str, np.ndarray]:
    path = GOLDEN / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == GOLDEN_SHA256[name], name
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


@pytest.fixture(scope="session")
def golden_activations() -> dict[str, np.ndarray]:
    return load_golden("activations.npz")


@pytest.fixture(scope="session")
def golden_dfa() -> dict[str, np.ndarray]:
    return load_golden("dfa_mnist_epoch1.npz")


@pytest.fixture(scope="session")
def golden_bp() -> dict[str, np.ndarray]:
    return load_golden("bp_tiny.npz")


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST, through the same fetch/verify/cache chain users get."""
    from pocketnn.datasets import load_dataset

    return load_dataset("mnist")
