"""What a learning rule is: the unit that turns the loss error into per-layer deltas.

A step runs the forward pass, takes the loss error ``e = y_hat - target`` at the output,
and hands both to the rule. The rule decides which error reaches each trainable layer
(DFA: ``e @ B_l`` through a fixed random matrix; BP: the error sent back by the layer
above), turns it into the layer's delta with :meth:`Layer.delta`, and calls ``update``
for each layer. ``update(index, delta)`` computes the layer's gradient, asks the optimizer
for new values and returns them (uncommitted), which a rule may use: the reference's
backprop propagates through the weights after their update.

A rule that needs state of its own (DFA's feedback matrices) creates it in :meth:`bind`
and saves it through :meth:`arrays`. To add a rule, subclass :class:`LearningRule` in a
module of its own and list it in :data:`pocketnn.train.rules.RULES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ...nn.model import Sequential

UpdateFn = Callable[[int, np.ndarray], Mapping[str, np.ndarray]]
"""``update(layer index, delta) -> the layer's new parameter values (uncommitted)``."""


class LearningRule(ABC):
    """Base class of learning rules."""

    name: ClassVar[str]

    def bind(self, model: Sequential, seed: int) -> None:  # noqa: B027 - optional hook
        """Prepare for ``model`` (create any random state from ``seed``)."""

    def settings(self) -> dict[str, Any]:
        """JSON-able settings stored in a checkpoint (besides the rule's name)."""
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        """Integer arrays stored in a checkpoint (e.g. DFA's feedback matrices)."""
        return {}

    @abstractmethod
    def backward(
        self, model: Sequential, caches: Sequence[Any], error: np.ndarray, update: UpdateFn
    ) -> None:
        """Deliver a delta to every trainable layer through ``update``."""


def trainable(model: Sequential) -> list[int]:
    """Indices of the layers that have parameters."""
    return [i for i, layer in enumerate(model.layers) if layer.parameters()]
