"""The layer protocol: what every layer offers the model, the learning rules and the engines.

Training moves three kinds of integer arrays through a layer:

* **forward**: ``a`` (the input batch, shape ``(N, *input_shape)``) -> ``y`` (the output,
  ``(N, *output_shape)``), plus a *cache*, whatever the backward pass needs: a dense layer
  keeps its input and its activation's gradient inverse ``g``; a convolution would keep
  its unfolded input patches; a max-pooling layer the position of each maximum; a flatten
  layer only the shape to restore; an integer scaling layer its clamp mask.
* **delta**: an *error* at the layer's output (``dL/dy``, from the loss, a DFA feedback
  matrix or the layer above) becomes the layer's own *delta* at its sum (``error / g`` for
  a layer with an activation, the error itself for a layer without one).
* **backward**: the delta becomes the error the layer sends back to the layer below
  (``delta @ W.T`` for a dense layer; un-pooling, un-flattening, etc.).
* **gradient**: the delta and the cache give the integer gradient of every parameter,
  in the order of :meth:`Layer.parameters` (``a.T @ delta`` and ``colsum(delta)``).

Parameters are named integer arrays; the optimizer (:mod:`pocketnn.train.optimizer`)
turns a gradient into new values and the layer never updates itself. A layer's
configuration is a frozen dataclass (``config``) from which
:func:`pocketnn.nn.layers.build_layer` rebuilds it, so a model file describes layers by
type and typed fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import numpy as np


class Gradient(NamedTuple):
    """The exact integer gradient of one parameter (int64).

    ``rows``: the parameter rows it covers (None: all). Rows left out have an exactly zero
    gradient (a dense layer skips all-zero input columns of raw pixels).
    ``scale``: the optimizer divides by ``lr_inv * scale`` (a convolution sums its gradient
    over every output position, so it asks for that many times smaller steps).
    ``int32``: the value passed the int32 guard (the reference's semantics, and what lets
    the optimizer update in int32); a convolution's gradient is exact in int64 instead.
    """

    name: str
    value: np.ndarray
    rows: np.ndarray | None = None
    scale: int = 1
    int32: bool = True


@dataclass(frozen=True)
class LayerConfig:
    """Base of the typed configurations: every layer has a name used in error messages."""

    name: str

    def stored(self) -> dict[str, Any]:
        """The fields a model file stores: all of them, except fields added after format 3
        was released while they hold their default (a file of a layer that existed then
        stays byte for byte what that release wrote and reads)."""
        return {
            key: value
            for key, value in vars(self).items()
            if not (key in LATER_FIELDS and value == LATER_FIELDS[key])
        }


LATER_FIELDS: Mapping[str, Any] = MappingProxyType({"frac_bits": 0, "bias": True})
"""Config fields added to format 3 later, with the defaults that leave a layer unchanged."""


@runtime_checkable
class Layer(Protocol):
    """The protocol every layer implements (see the module docstring)."""

    type_name: ClassVar[str]
    name: str

    @property
    def config(self) -> LayerConfig: ...

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def output_shape(self) -> tuple[int, ...]: ...

    @property
    def weight_clamp(self) -> int:
        """Bound of ``|param|`` after every update (0 for a layer without parameters)."""
        ...

    def forward(self, a: np.ndarray) -> tuple[np.ndarray, Any]: ...

    def infer(self, a: np.ndarray) -> np.ndarray:
        """The output alone, for prediction."""
        ...

    def delta(self, error: np.ndarray, cache: Any) -> np.ndarray: ...

    def backward(
        self, delta: np.ndarray, cache: Any, params: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """The error sent to the layer below; ``params`` replace the layer's own if given."""
        ...

    def gradient(self, delta: np.ndarray, cache: Any) -> list[Gradient]: ...

    def parameters(self) -> dict[str, np.ndarray]:
        """Named parameter arrays (the live arrays, in update order); empty if none."""
        ...

    def set_parameters(self, params: Mapping[str, np.ndarray]) -> None: ...


def check_parameter(
    layer: str, label: str, value: np.ndarray, shape: tuple[int, ...], bound: int
) -> np.ndarray:
    """Refuse a parameter of another shape, a non-integer dtype or values beyond ``bound``."""
    value = np.asarray(value)
    if value.dtype.kind not in "iu":
        raise TypeError(f"{layer}.{label}: expected integers, got dtype {value.dtype}")
    if value.shape != shape:
        raise ValueError(f"{layer}.{label}: expected shape {shape}, got {value.shape}")
    if value.size:
        lo, hi = int(value.min()), int(value.max())
        if max(-lo, hi) > bound:
            raise ValueError(f"{layer}.{label}: values exceed ±{bound}")
    return value
