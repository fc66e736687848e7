"""What a learning rule is: the unit that turns the loss error into per-layer deltas.

A step runs the forward pass, takes the loss error ``e = y_hat - target`` at the output,
and hands a :class:`StepState` to the rule. The rule decides which error reaches each
trainable layer (DFA: ``e @ B`` through a fixed random matrix; BP: the error sent back by
the layer above; local losses: the error of a small classifier head of the layer's own),
turns it into the layer's delta, and calls ``update(layer, cache, delta)`` for each layer
it trains. ``update`` computes the layer's gradient, asks the optimizer for new values and
returns them (uncommitted), which a rule may use: the reference's backprop propagates
through the weights after their update.

Layers group into *blocks*: a trainable layer and the parameter-free layers after it
(scaling, activation, pooling, flatten) up to the next trainable layer. An error that
reaches a block's output goes back through its parameter-free layers to the trainable one
(:func:`block_delta`).

A rule that needs state of its own (DFA's feedback matrices, local heads) creates it in
:meth:`LearningRule.bind`, returns it from :meth:`LearningRule.arrays` for checkpoints and
takes it back in :meth:`LearningRule.restore`. To add a rule, subclass
:class:`LearningRule` in a module of its own and list it in
:data:`pocketnn.train.rules.RULES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ...nn.layers import Layer
from ...nn.model import Sequential

UpdateFn = Callable[[Layer, Any, np.ndarray], Mapping[str, np.ndarray]]
"""``update(layer, cache, delta) -> the layer's new parameter values (uncommitted)``."""


@dataclass
class StepState:
    """What a rule sees of one step: the forward pass, the loss error and the targets."""

    model: Sequential
    caches: Sequence[Any]
    error: np.ndarray
    targets: np.ndarray
    outputs: Sequence[np.ndarray] | None = None  # each layer's output, if the rule asks


class LearningRule(ABC):
    """Base class of learning rules."""

    name: ClassVar[str]
    needs_outputs: ClassVar[bool] = False  # keep every layer's output for backward

    def bind(self, model: Sequential, seed: int) -> None:  # noqa: B027 - optional hook
        """Prepare for ``model`` (create any random state from ``seed``)."""

    def settings(self) -> dict[str, Any]:
        """JSON-able settings stored in a checkpoint (besides the rule's name)."""
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        """Integer arrays stored in a checkpoint (e.g. DFA's feedback matrices)."""
        return {}

    @classmethod
    def restore(cls, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> LearningRule:
        """The rule as :meth:`settings` and :meth:`arrays` saved it."""
        return cls()

    @abstractmethod
    def backward(self, state: StepState, update: UpdateFn) -> None:
        """Deliver a delta to every trainable layer through ``update``."""


def trainable(model: Sequential) -> list[int]:
    """Indices of the layers that have parameters."""
    return [i for i, layer in enumerate(model.layers) if layer.parameters()]


def blocks(model: Sequential) -> list[tuple[int, int]]:
    """``(first, last)`` layer indices of each block: a trainable layer and the
    parameter-free layers after it, up to the next trainable one (or the end)."""
    starts = trainable(model)
    ends = [nxt - 1 for nxt in starts[1:]] + [len(model.layers) - 1]
    return list(zip(starts, ends))


def block_delta(
    model: Sequential, caches: Sequence[Any], first: int, last: int, error: np.ndarray
) -> np.ndarray:
    """The delta of layer ``first`` for an ``error`` at the output of layer ``last``."""
    layers = model.layers
    for j in range(last, first, -1):
        error = layers[j].backward(layers[j].delta(error, caches[j]), caches[j])
    return layers[first].delta(error, caches[first])
