"""Seeded hold-outs: a test split of a dataset that has none, a validation set for early
stopping and model choice.

A split depends on its seed and the number of samples alone (numpy's PCG64 seeded by
``[seed, stream]``), never on the training seed: every run of a sweep over training seeds
sees the same training, validation and test samples.
"""

from __future__ import annotations

import numpy as np

STREAM_TEST, STREAM_VALIDATION = 101, 102
"""Streams of the split seed, apart from the training seed's (see ``train.seeding``)."""


def holdout(n: int, count: int, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(kept, held)`` of ``n`` samples, ``count`` of them held out at random; both
    in increasing order, so the kept samples stay in the order the data gave them."""
    if not 0 <= count <= n:
        raise ValueError(f"cannot hold out {count} of {n} samples")
    held = np.sort(np.random.default_rng([seed, stream]).permutation(n)[:count])
    kept = np.setdiff1d(np.arange(n), held, assume_unique=True)
    return kept, held


def split_validation(
    x: np.ndarray, y: np.ndarray, count: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_val, y_val)``: ``count`` training samples held out for
    validation, chosen by ``seed``."""
    kept, held = holdout(len(y), count, seed, STREAM_VALIDATION)
    return x[kept], y[kept], x[held], y[held]
