"""Integer backpropagation: the error goes back layer by layer through the weights.

Dense layers check every error against int32 (the reference's semantics); in a network
with :class:`~pocketnn.nn.layers.Scale` layers the error is also brought back within a few
bits at every scaling layer, so it cannot grow from layer to layer and overflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import LearningRule, StepState, UpdateFn


class Backprop(LearningRule):
    """Backpropagation with truncating divisions.

    Parameters
    ----------
    updated_weights : propagate through each layer's weights *after* their update, as the
        reference does (the default); ``False`` gives textbook backprop
    """

    name = "bp"

    def __init__(self, updated_weights: bool = True) -> None:
        self.updated_weights = bool(updated_weights)

    @classmethod
    def restore(cls, settings: Mapping[str, Any], arrays: Mapping[str, Any]) -> Backprop:
        return cls(settings.get("bp_updated_weights", True))

    def settings(self) -> dict[str, Any]:
        return {"bp_updated_weights": self.updated_weights}

    def backward(self, state: StepState, update: UpdateFn) -> None:
        layers, caches = state.model.layers, state.caches
        # below the first trainable layer (e.g. an input Scale) no error is needed
        first = next((i for i, layer in enumerate(layers) if layer.parameters()), len(layers))
        delta = layers[-1].delta(state.error, caches[-1])
        for i in range(len(layers) - 1, first - 1, -1):
            new = update(layers[i], caches[i], delta) if layers[i].parameters() else None
            if i > first:
                params = new if self.updated_weights else None
                err = layers[i].backward(delta, caches[i], params)
                delta = layers[i - 1].delta(err, caches[i - 1])
