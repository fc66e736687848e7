"""Write scikit-learn's bundled handwritten digits as a pocketnn ``.npz`` dataset.

The 1,797 8x8 images (values 0..16, shipped inside the scikit-learn wheel, no download)
become uint8 arrays ``x_train`` (N, 8, 8), ``y_train``, ``x_test``, ``y_test``: a seeded
20 % of the images is the test set. Usage::

    python examples/digits_npz.py digits.npz
"""

from __future__ import annotations

import sys

import numpy as np
from sklearn.datasets import load_digits


def digits_arrays(test_percent: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """The four arrays of the digits dataset, split by ``seed``."""
    digits = load_digits()
    x = digits.images.astype(np.uint8)  # exact: the values are the integers 0..16
    y = digits.target.astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = len(y) * test_percent // 100
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "digits.npz"
    np.savez_compressed(out, **digits_arrays())
    print(f"wrote {out}")
