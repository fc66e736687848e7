"""Direct feedback alignment: every hidden block learns from ``e @ B``, B fixed and random.

The error of the whole network reaches each hidden block in one product with its own
fixed random matrix, instead of through the layers above: no error grows layer by layer,
which keeps integer training from overflowing (PocketNN's choice).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...core.arith import INT32_MAX
from ...core.products import matmul
from ...nn.model import Sequential
from ..seeding import STREAM_FEEDBACK, init_range, nonzero_uniform, stream
from .base import LearningRule, StepState, UpdateFn, block_delta, blocks


def random_feedback(model: Sequential, seed: int) -> list[np.ndarray]:
    """DFA feedback matrices, shape (n_classes, block output size), int32, one per hidden
    block (every block but the last), drawn from the reference's init range of the block's
    trainable layer input size and the block's output size."""
    rng = stream(seed, STREAM_FEEDBACK)
    out = []
    for first, last in blocks(model)[:-1]:
        size = math.prod(model.layers[last].output_shape)
        r = init_range(math.prod(model.layers[first].input_shape), size)
        out.append(nonzero_uniform(rng, r, (model.n_classes, size)).astype(np.int32))
    return out


class DFA(LearningRule):
    """Direct feedback alignment.

    Parameters
    ----------
    feedback : the matrices to use, one per hidden block, shape (n_classes, the block's
        output size); left out, they are drawn from the seed
    """

    name = "dfa"

    def __init__(self, feedback: Sequence[np.ndarray] | None = None) -> None:
        self.feedback: list[np.ndarray] = [] if feedback is None else list(feedback)
        self._given = feedback is not None
        self._blocks: list[tuple[int, int]] = []

    @classmethod
    def restore(cls, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> DFA:
        return cls([arrays[f"feedback{i}"] for i in range(len(arrays))])

    def bind(self, model: Sequential, seed: int) -> None:
        self._blocks = blocks(model)  # fixed: a model's layers do not change
        hidden = self._blocks[:-1]
        if not self._given:
            self.feedback = random_feedback(model, seed)
            return
        if len(self.feedback) != len(hidden):
            raise ValueError(f"DFA needs {len(hidden)} feedback matrices, got {len(self.feedback)}")
        for (first, last), b in zip(hidden, self.feedback):
            expected = (model.n_classes, math.prod(model.layers[last].output_shape))
            b = np.asarray(b)
            if b.dtype.kind not in "iu" or b.shape != expected:
                raise ValueError(
                    f"{model.layers[first].name}: feedback must be an integer array of shape "
                    f"{expected}, got {b.dtype} {b.shape}"
                )
            if b.size and max(-int(b.min()), int(b.max())) > INT32_MAX:
                name = model.layers[first].name
                raise ValueError(f"{name}: feedback values exceed the int32 range")
        self.feedback = [np.asarray(b) for b in self.feedback]

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"feedback{i}": b for i, b in enumerate(self.feedback)}

    def backward(self, state: StepState, update: UpdateFn) -> None:
        model, caches, e = state.model, state.caches, state.error
        for (first, last), b in zip(self._blocks[:-1], self.feedback):
            layer = model.layers[first]
            err = matmul(e, b, where=f"{layer.name}: feedback e @ B")
            err = err.reshape((err.shape[0], *model.layers[last].output_shape))
            update(layer, caches[first], block_delta(model, caches, first, last, err))
        first, last = self._blocks[-1]
        update(model.layers[first], caches[first], block_delta(model, caches, first, last, e))
