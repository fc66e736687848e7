"""Integer backpropagation: the error goes back layer by layer through the weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...nn.model import Sequential
from .base import LearningRule, UpdateFn


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

    def settings(self) -> dict[str, Any]:
        return {"bp_updated_weights": self.updated_weights}

    def backward(
        self, model: Sequential, caches: Sequence[Any], error: np.ndarray, update: UpdateFn
    ) -> None:
        layers = model.layers
        delta = layers[-1].delta(error, caches[-1])
        for i in range(len(layers) - 1, -1, -1):
            new = update(i, delta) if layers[i].parameters() else None
            if i:
                params = new if self.updated_weights else None
                err = layers[i].backward(delta, caches[i], params)
                delta = layers[i - 1].delta(err, caches[i - 1])
