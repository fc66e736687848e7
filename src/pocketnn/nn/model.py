"""A sequential integer network: layers applied in order, the last one gives class scores."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.locks import ReadWriteLock
from ..engines import accelerated_scores
from ..engines.blas import single_thread_blas
from .layers import WEIGHT_CLAMP, Dense, Layer, build_layer


class Sequential:
    """Layers applied in order; the last layer's output is the class scores.

    Parameters
    ----------
    layers : objects implementing :class:`~pocketnn.nn.layers.Layer`, each one's
        ``input_shape`` matching the previous one's ``output_shape``
    """

    def __init__(self, layers: Sequence[Layer]) -> None:
        if not layers:
            raise ValueError("a model needs at least one layer")
        for prev, layer in zip(layers, layers[1:]):
            if prev.output_shape != layer.input_shape:
                raise ValueError(
                    f"{layer.name}: expects input of shape {_shape(layer.input_shape)} but "
                    f"{prev.name} gives {_shape(prev.output_shape)}"
                )
        if len(layers[-1].output_shape) != 1:
            raise ValueError(f"{layers[-1].name}: the last layer must output a vector of scores")
        self.layers = list(layers)
        self.lock = ReadWriteLock()  # readers predict and save; a training step writes

    def __getstate__(self) -> dict[str, Any]:  # a lock does not pickle: a copy gets its own
        return {key: value for key, value in vars(self).items() if key != "lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self.lock = ReadWriteLock()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample, e.g. ``(784,)`` or ``(1, 28, 28)``."""
        return self.layers[0].input_shape

    @property
    def n_classes(self) -> int:
        return self.layers[-1].output_shape[0]

    @property
    def dims(self) -> list[int]:
        """Per-sample sizes, input first, e.g. ``[784, 100, 50, 10]`` for the paper's MLP."""
        return [math.prod(self.input_shape)] + [
            math.prod(layer.output_shape) for layer in self.layers
        ]

    @property
    def n_params(self) -> int:
        return sum(p.size for layer in self.layers for p in layer.parameters().values())

    def __repr__(self) -> str:
        first = self.layers[0]
        activation = getattr(first, "activation_name", type(first).__name__)
        return f"Sequential({'-'.join(map(str, self.dims))}, {activation})"

    def check_input(self, x: np.ndarray) -> np.ndarray:
        """Refuse a non-integer or wrongly shaped batch with a clear error.

        A batch of flat rows of the right size is viewed in the model's input shape (MNIST's
        ``(N, 784)`` images for a model that takes ``(1, 28, 28)``).
        """
        x = np.asarray(x)
        if x.dtype.kind not in "iu":
            raise TypeError(f"input must be an integer array, got dtype {x.dtype}")
        if x.ndim == 2 and len(self.input_shape) > 1 and x.shape[1] == math.prod(self.input_shape):
            x = x.reshape(x.shape[0], *self.input_shape)
        if x.shape[1:] != self.input_shape or x.ndim < 2:
            raise ValueError(
                f"input must have shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}"
            )
        return x

    def forward(
        self, x: np.ndarray, outputs: list[np.ndarray] | None = None
    ) -> tuple[np.ndarray, list[Any]]:
        """Run the network and keep what training needs.

        Returns
        -------
        output : (N, n_classes) integers
        caches : per layer, what its backward pass needs (see the layer protocol)

        ``outputs``, if given, receives every layer's output.
        """
        a = self.check_input(x)
        caches = []
        with self.lock.reading():
            for layer in self.layers:
                a, cache = layer.forward(a)
                caches.append(cache)
                if outputs is not None:
                    outputs.append(a)
        return a, caches

    def scores(self, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """Class scores (the last layer's integer output) for every row of ``x``.

        Rows go through in batches of ``batch_size``: large enough for efficient products,
        small enough to bound the memory of the intermediate activations.
        """
        x = self.check_input(x)
        with self.lock.reading():  # one set of weights for every batch
            kernel = accelerated_scores()
            scores = None if kernel is None else kernel(self, x, batch_size)
            if scores is not None:  # the engine ran the whole pass
                return scores
            return self._scores(x, batch_size)

    def _scores(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        out = np.empty((x.shape[0], self.n_classes), dtype=np.int64)
        with single_thread_blas():
            for start in range(0, x.shape[0], batch_size):
                a = x[start : start + batch_size]
                for layer in self.layers:
                    a = layer.infer(a)
                out[start : start + batch_size] = a
        return out

    def predict(self, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """Predicted class per row: the first index of the highest score."""
        return np.argmax(self.scores(x, batch_size), axis=1)

    def count_correct(self, x: np.ndarray, labels: np.ndarray) -> int:
        """How many rows of ``x`` are predicted as their label."""
        return int(np.count_nonzero(self.predict(x) == np.asarray(labels)))

    def config(self) -> list[dict[str, Any]]:
        """Each layer's type and typed config, as stored in model files (format 3)."""
        return [{"type": layer.type_name, **layer.config.stored()} for layer in self.layers]

    @classmethod
    def from_config(cls, config: Sequence[dict[str, Any]]) -> Sequential:
        layers = []
        for spec in config:
            fields = dict(spec)
            layers.append(build_layer(fields.pop("type"), fields))
        return cls(layers)


def _shape(shape: tuple[int, ...]) -> str:
    return str(shape[0]) if len(shape) == 1 else "x".join(map(str, shape))


def build_mlp(
    dims: Sequence[int],
    activation: str = "pocket_tanh",
    output_activation: str | None = None,
    weight_clamp: int = WEIGHT_CLAMP,
) -> Sequential:
    """An MLP with layers ``fc1..fcL`` for widths ``dims`` (input first), all weights zero.

    ``build_mlp([784, 100, 50, 10])`` is the paper's MNIST network.
    """
    dims = [int(d) for d in dims]
    if len(dims) < 2:
        raise ValueError(f"an architecture needs an input and an output width, got {dims}")
    n = len(dims) - 1
    return Sequential(
        [
            Dense(
                dims[i],
                dims[i + 1],
                (output_activation or activation) if i == n - 1 else activation,
                name=f"fc{i + 1}",
                weight_clamp=weight_clamp,
            )
            for i in range(n)
        ]
    )
