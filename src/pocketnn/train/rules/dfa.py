"""Direct feedback alignment: every hidden layer learns from ``e @ B_l``, B_l fixed and random.

The error of the whole network reaches each hidden layer in one product with its own
fixed random matrix, instead of through the layers above: no error grows layer by layer,
which keeps integer training from overflowing (PocketNN's choice).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...core.arith import INT32_MAX
from ...core.products import matmul
from ...nn.model import Sequential
from ..seeding import STREAM_FEEDBACK, init_range, nonzero_uniform, stream
from .base import LearningRule, UpdateFn, trainable


def random_feedback(model: Sequential, seed: int) -> list[np.ndarray]:
    """DFA feedback matrices, shape (n_classes, output size), int32, for each hidden layer.

    Hidden layers are the trainable layers but the last; each matrix is drawn from the
    reference's init range of its layer.
    """
    rng = stream(seed, STREAM_FEEDBACK)
    out = []
    for i in trainable(model)[:-1]:
        layer = model.layers[i]
        size = math.prod(layer.output_shape)
        r = init_range(math.prod(layer.input_shape), size)
        out.append(nonzero_uniform(rng, r, (model.n_classes, size)).astype(np.int32))
    return out


class DFA(LearningRule):
    """Direct feedback alignment.

    Parameters
    ----------
    feedback : the matrices to use, one per hidden (trainable, not last) layer, shape
        (n_classes, that layer's output size); left out, they are drawn from the seed
    """

    name = "dfa"

    def __init__(self, feedback: Sequence[np.ndarray] | None = None) -> None:
        self.feedback: list[np.ndarray] = [] if feedback is None else list(feedback)
        self._given = feedback is not None
        self._trainable: list[int] = []

    def bind(self, model: Sequential, seed: int) -> None:
        self._trainable = trainable(model)
        hidden = self._trainable[:-1]
        if not self._given:
            self.feedback = random_feedback(model, seed)
            return
        if len(self.feedback) != len(hidden):
            raise ValueError(f"DFA needs {len(hidden)} feedback matrices, got {len(self.feedback)}")
        for i, b in zip(hidden, self.feedback):
            layer = model.layers[i]
            expected = (model.n_classes, math.prod(layer.output_shape))
            b = np.asarray(b)
            if b.dtype.kind not in "iu" or b.shape != expected:
                raise ValueError(
                    f"{layer.name}: feedback must be an integer array of shape {expected}, "
                    f"got {b.dtype} {b.shape}"
                )
            if b.size and max(-int(b.min()), int(b.max())) > INT32_MAX:
                raise ValueError(f"{layer.name}: feedback values exceed the int32 range")
        self.feedback = [np.asarray(b) for b in self.feedback]

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"feedback{i}": b for i, b in enumerate(self.feedback)}

    def backward(
        self, model: Sequential, caches: Sequence[Any], error: np.ndarray, update: UpdateFn
    ) -> None:
        layers = self._trainable  # fixed by bind: a model's layers do not change
        for i, b in zip(layers[:-1], self.feedback):
            layer = model.layers[i]
            err = matmul(error, b, where=f"{layer.name}: feedback e @ B")
            err = err.reshape((err.shape[0], *layer.output_shape))
            update(i, layer.delta(err, caches[i]))
        last = layers[-1]
        update(last, model.layers[last].delta(error, caches[last]))
