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


PROB_BITS = 15
"""Softmax probabilities and their errors are Q15 integers: ``2**15`` is probability 1."""
SOFTMAX_UNIT = 16
"""Output units per natural-log unit of the integer softmax: outputs 16 apart differ by a
factor e in probability (the logit of an output ``y`` is ``y / 16``)."""


def _exp_table() -> np.ndarray:
    """``round(2**16 * exp(-d / 16))`` for ``d = 0, 1, ...`` down to zero, built with
    integers only: each entry is the previous times ``exp(-1/16)`` in Q16 (61565)."""
    table = [1 << 16]
    while table[-1]:
        table.append(table[-1] * 61565 >> 16)
    return np.array(table, dtype=np.int64)


EXP_TABLE = _exp_table()
EXP_TABLE.flags.writeable = False


def softmax(output: np.ndarray) -> np.ndarray:
    """Integer softmax of each row in Q15 (truncating): ``exp((y - max) / 16)`` from
    :data:`EXP_TABLE`, normalised by the row's sum."""
    output = np.asarray(output, dtype=np.int64)
    if output.size == 0:
        return output.copy()
    gap = np.minimum(output.max(axis=1, keepdims=True) - output, EXP_TABLE.size - 1)
    e = EXP_TABLE[gap]
    return (e << PROB_BITS) // e.sum(axis=1, keepdims=True)


def target_distribution(targets: np.ndarray) -> np.ndarray:
    """Targets as Q15 distributions: each row of non-negative targets divided by its sum
    (one-hot targets of any value give probability 1 at the class)."""
    targets = np.asarray(targets, dtype=np.int64)
    if targets.size and targets.min() < 0:
        raise ValueError("softmax targets must be non-negative")
    total = targets.sum(axis=1, keepdims=True)
    if targets.size and not total.all():
        raise ValueError("softmax targets need a positive value in every row")
    return (targets << PROB_BITS) // np.maximum(total, 1)


def softmax_loss(output: np.ndarray, targets: np.ndarray) -> tuple[int, np.ndarray]:
    """Softmax cross-entropy with integers: the error is ``p - t`` in Q15, the gradient of
    cross-entropy with respect to the logits. The loss reported is the batch's summed
    squared error of the probabilities in Q15 (the Brier score times ``2**15``, truncated
    per sample): an integer that falls as the probabilities sharpen."""
    error = softmax(output) - target_distribution(targets)
    if error.size == 0:
        return 0, error
    return int(((error * error).sum(axis=1) >> PROB_BITS).sum()), error


LOSSES = {"l2": l2_loss, "softmax": softmax_loss}
"""Loss name -> ``loss(output, targets) -> (summed loss, error)``."""
