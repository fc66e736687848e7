"""The integer L2 loss and its targets."""

from __future__ import annotations

import numpy as np

TARGET_VALUE = 15
"""The reference's one-hot targets: 15 at the true class, 0 elsewhere."""


def one_hot(labels: np.ndarray, n_classes: int, value: int = TARGET_VALUE) -> np.ndarray:
    """Integer one-hot targets of shape (N, n_classes), ``value`` at each label."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes - 1}]")
    targets = np.zeros((labels.shape[0], n_classes), dtype=np.int64)
    targets[np.arange(labels.shape[0]), labels] = value
    return targets


def l2_loss(output: np.ndarray, targets: np.ndarray) -> tuple[int, np.ndarray]:
    """Return the summed loss ``sum((y - t)**2 / 2)`` (truncated per element) and ``y - t``.

    The delta is not divided by the batch size, as in the reference. The loss is exact: when
    the squares could overflow int64 (outputs of ~2**31, e.g. pocket softmax) they are
    summed as Python integers.
    """
    delta = np.asarray(output, dtype=np.int64) - targets
    if delta.size == 0:
        return 0, delta
    peak = max(-int(delta.min()), int(delta.max()))
    if peak * peak * delta.size < 2**63:
        return int((delta * delta // 2).sum()), delta
    return sum(int(v) * int(v) // 2 for v in delta.ravel()), delta
