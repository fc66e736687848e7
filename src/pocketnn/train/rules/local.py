"""Local losses: every block learns from a small classifier head of its own.

Each hidden block (a trainable layer and the scaling, activation and pooling layers after
it) gets a head: max pooling until the block's output has at most ``head_inputs`` values, a
flatten, a linear dense layer to the classes and a scaling layer. The head is trained on
its own integer L2 loss against the same targets, and its error, sent back through the
head, is the only error the block receives: no error flows from one block into the block
below. The last block learns from the network's own loss. (The idea of NITRO-D, integer
CNNs trained block by block; written here from the idea.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...nn.layers import Dense, Flatten, Layer, MaxPool2D, Scale, scale_divisor
from ...nn.model import Sequential
from ..seeding import STREAM_HEADS, init_range, nonzero_uniform, stream
from .base import LearningRule, StepState, UpdateFn, block_delta, blocks


def build_head(name: str, shape: tuple[int, ...], n_classes: int, head_inputs: int) -> list[Layer]:
    """The head of a block whose output has ``shape``: pool, flatten, dense, scale."""
    head: list[Layer] = []
    if len(shape) == 3:
        c, h, w = shape
        size = 1
        while c * (h // size) * (w // size) > head_inputs and min(h, w) // (2 * size) >= 1:
            size *= 2
        if size > 1:
            head.append(MaxPool2D(c, h, w, size, name=f"{name}.pool"))
            shape = head[-1].output_shape
        head.append(Flatten(*shape, name=f"{name}.flatten"))
    n = math.prod(shape)
    head.append(Dense(n, n_classes, "as_is", name=f"{name}.fc"))
    head.append(Scale((n_classes,), scale_divisor(n), name=f"{name}.scale"))
    return head


class LocalLosses(LearningRule):
    """Block-local training with integer classifier heads.

    Parameters
    ----------
    head_inputs : the most values a head's dense layer takes (max pooling by powers of
        two brings a block's output down to it)
    """

    name = "local"
    needs_outputs = True

    def __init__(self, head_inputs: int = 1024) -> None:
        if isinstance(head_inputs, bool) or not isinstance(head_inputs, int) or head_inputs < 1:
            raise ValueError(f"head_inputs must be a positive integer, got {head_inputs!r}")
        self.head_inputs = head_inputs
        self.heads: list[list[Layer]] = []
        self._blocks: list[tuple[int, int]] = []
        self._saved: Mapping[str, np.ndarray] | None = None

    def settings(self) -> dict[str, Any]:
        return {"head_inputs": self.head_inputs}

    @classmethod
    def restore(cls, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> LocalLosses:
        rule = cls(int(settings.get("head_inputs", 1024)))
        rule._saved = dict(arrays)
        return rule

    def bind(self, model: Sequential, seed: int) -> None:
        self._blocks = blocks(model)
        rng = stream(seed, STREAM_HEADS)
        self.heads = []
        for k, (_, last) in enumerate(self._blocks[:-1]):
            head = build_head(
                f"head{k + 1}", model.layers[last].output_shape, model.n_classes, self.head_inputs
            )
            for layer in head:
                for pname, value in layer.parameters().items():
                    key = f"head{k + 1}.{layer.name}.{pname}"
                    if self._saved is not None:
                        layer.set_parameters({**layer.parameters(), pname: self._saved[key]})
                    elif pname == "W":
                        r = min(init_range(*value.shape), layer.weight_clamp)
                        layer.set_parameters(
                            {**layer.parameters(), "W": nonzero_uniform(rng, r, value.shape)}
                        )
            self.heads.append(head)
        self._saved = None

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            f"head{k + 1}.{layer.name}.{pname}": value
            for k, head in enumerate(self.heads)
            for layer in head
            for pname, value in layer.parameters().items()
        }

    def backward(self, state: StepState, update: UpdateFn) -> None:
        model, caches = state.model, state.caches
        for (first, last), head in zip(self._blocks[:-1], self.heads):
            a, head_caches = state.outputs[last], []
            for layer in head:
                a, cache = layer.forward(a)
                head_caches.append(cache)
            err = np.asarray(a, dtype=np.int64) - state.targets
            for layer, cache in zip(reversed(head), reversed(head_caches)):
                delta = layer.delta(err, cache)
                if layer.parameters():
                    update(layer, cache, delta)
                err = layer.backward(delta, cache)  # through the weights of the forward pass
            update(model.layers[first], caches[first], block_delta(model, caches, first, last, err))
        first, last = self._blocks[-1]
        update(
            model.layers[first], caches[first], block_delta(model, caches, first, last, state.error)
        )
