"""Element-wise layers without parameters: the integer scaling layer and an activation layer.

A convolution (or a linear dense layer) sums many products; its sum must be brought back
into the range an activation expects before the activation, and the error going back must
stay small enough that integer backprop never overflows. :class:`Scale` does both:
forward, a truncating division by a constant derived from the fan-in, then a clamp;
backward, a power-of-two shift that keeps every error within ``error_bits`` bits (the shift
depends on the batch's values only: deterministic, and exact where no shift is needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ...core.arith import clamp, extremes, signed_dtype_for, trunc_div, trunc_div_few
from ...engines import accelerated_ops
from ..activations import Activation as ActivationFunction
from ..activations import Table, get_activation
from .base import LayerConfig
from .layout import axis_order, flat_view
from .shape_layers import Parameterless

K_BIT = 8
"""Default scaling: ``z / (2**K_BIT * fan_in)``, the pocket tanh pre-scaling."""


def _shape_check(name: str, shape) -> tuple[int, ...]:
    shape = tuple(int(d) for d in shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"{name}: shape must be positive sizes, got {shape}")
    return shape


class ShapePreserving(Parameterless):
    """A parameter-free element-wise layer: output shape = input shape = ``config.shape``."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._cfg.shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self._cfg.shape


@dataclass(frozen=True)
class ScaleConfig(LayerConfig):
    shape: tuple[int, ...]
    divisor: int
    bound: int = 127
    error_bits: int = 8


def shrink_error(error: np.ndarray, bits: int) -> np.ndarray:
    """``error`` divided (toward zero) by the smallest power of two that brings every value
    below ``2**bits`` in magnitude; unchanged when it already is."""
    if error.size == 0:
        return error
    lo, hi = extremes(error)
    peak = max(-lo, hi)
    shift = max(0, peak.bit_length() - bits)
    return trunc_div(error, 1 << shift) if shift else error


class Scale(ShapePreserving):
    """``y = clamp(z / divisor, -bound, bound)``, truncating; ``divisor`` is usually
    :func:`scale_divisor` of the layer below's fan-in."""

    type_name: ClassVar[str] = "Scale"

    def __init__(
        self,
        shape: tuple[int, ...] | list[int],
        divisor: int,
        bound: int = 127,
        error_bits: int = 8,
        name: str = "scale",
    ) -> None:
        for label, value in (("divisor", divisor), ("bound", bound), ("error_bits", error_bits)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: {label} must be a positive integer, got {value!r}")
        if error_bits > 30:
            raise ValueError(f"{name}: error_bits must be at most 30, got {error_bits}")
        self.name = name
        self._cfg = ScaleConfig(
            name, _shape_check(name, shape), int(divisor), int(bound), int(error_bits)
        )
        self._dtype = signed_dtype_for(self._cfg.bound)

    def _scaled(self, z: np.ndarray) -> np.ndarray:
        return clamp(trunc_div(z, self._cfg.divisor), -self._cfg.bound, self._cfg.bound)

    def forward(self, a: np.ndarray) -> tuple[np.ndarray, None]:
        return self._scaled(a).astype(self._dtype), None

    def infer(self, a: np.ndarray) -> np.ndarray:
        return self._scaled(a).astype(self._dtype)

    def delta(self, error: np.ndarray, cache: None) -> np.ndarray:
        """The error, shrunk to ``error_bits`` bits. It passes the clamp unchanged (a clamped
        output would otherwise never learn its way back: the activation after the scaling
        layer decides where the slope is flat)."""
        return shrink_error(error, self._cfg.error_bits)

    def backward(
        self, delta: np.ndarray, cache: Any, params: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        return delta


def scale_divisor(fan_in: int, k: int = K_BIT) -> int:
    """``2**k * fan_in``: maps a sum of ``fan_in`` products of 8-bit values and weights of a
    few hundred back to about ``[-127, 127]``."""
    return (1 << k) * int(fan_in)


@dataclass(frozen=True)
class ActivationConfig(LayerConfig):
    shape: tuple[int, ...]
    activation: str
    fan_in: int = 1


class ActivationLayer(ShapePreserving):
    """An element-wise activation as a layer of its own: ``(y, g) = f(z, fan_in)``; the delta
    is ``error / g`` (truncating), passed unchanged to the layer below.

    A tabulated activation (every one the CNN presets use) runs from its table: one clip
    and two lookups in memory order, ``g`` in the smallest dtype holding the table's
    values, and the delta divides by those few values only (:func:`trunc_div_few`). The
    table is flat outside its range, so the bits are the function's for every int64 ``z``.
    """

    type_name: ClassVar[str] = "Activation"

    def __init__(
        self,
        shape: tuple[int, ...] | list[int],
        activation: str,
        fan_in: int = 1,
        name: str = "act",
    ) -> None:
        function: ActivationFunction = get_activation(activation)
        if not function.elementwise:
            raise ValueError(f"{name}: {activation} is not element-wise")
        self.name = name
        self.function = function
        self._cfg = ActivationConfig(name, _shape_check(name, shape), activation, int(fan_in))
        self._dtype = signed_dtype_for(function.out_bound)
        table = function.table
        self._lookup = None if table is None else TableLookup(table, fan_in, self._dtype)

    @property
    def activation_name(self) -> str:
        return self.function.name

    def forward(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._lookup is not None:
            return self._lookup(a)
        y, g = self.function(a, self._cfg.fan_in)
        return y.astype(self._dtype), g

    def infer(self, a: np.ndarray) -> np.ndarray:
        if self._lookup is not None:
            return self._lookup(a, with_g=False)[0]
        return self.function(a, self._cfg.fan_in)[0].astype(self._dtype)

    def delta(self, error: np.ndarray, cache: np.ndarray) -> np.ndarray:
        if self._lookup is not None:
            fast = divide_in_layout(error, cache)
            if fast is not None:
                return fast
            return trunc_div_few(error, cache, self._lookup.g_values)
        return trunc_div(error, cache)

    def backward(
        self, delta: np.ndarray, cache: Any, params: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        return delta


class TableLookup:
    """A tabulated activation applied as ``y[clip(z / divisor) - low]`` and
    ``g[clip(z / divisor) - low]`` (:class:`~pocketnn.nn.activations.Table`), element by
    element in memory order, so the outputs keep the input's layout; ``y`` in
    ``y_dtype`` (cast as the function's output would be), ``g`` in the smallest dtype
    holding the table's gradient inverses."""

    def __init__(self, table: Table, fan_in: int, y_dtype: np.dtype) -> None:
        self.low, self.high = table.low, table.high
        self.divisor = int(table.divisor(int(fan_in)))
        self.y = table.y.astype(y_dtype)
        self.g = table.g.astype(signed_dtype_for(int(np.abs(table.g).max())))
        self.g_values = tuple(sorted(set(table.g.tolist())))

    def __call__(self, z: np.ndarray, with_g: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        flat, restore = flat_view(np.asarray(z))
        ops = accelerated_ops()
        if ops is not None:
            done = ops.table(flat, 0, self.divisor, self.low, self.y, self.g if with_g else None)
            if done is not None:
                return restore(done[0]), None if done[1] is None else restore(done[1])
        if self.divisor == 1:
            x = flat.astype(np.int64, copy=False)
        else:
            x = trunc_div(flat, self.divisor)
        index = np.clip(x, self.low, self.high)
        index -= self.low
        y = restore(self.y.take(index))
        return y, restore(self.g.take(index)) if with_g else None


def divide_in_layout(error: np.ndarray, g: np.ndarray) -> np.ndarray | None:
    """``trunc_div(error, g)`` by the engine's kernel, laid out as ``error``, when both lie
    in memory in the same order (an activation's error and its cached slopes); else None."""
    ops = accelerated_ops()
    if ops is None or error.shape != g.shape or axis_order(error) != axis_order(g):
        return None
    flat_e, restore = flat_view(error)
    flat_g, _ = flat_view(g)
    out = ops.divide(flat_e, flat_g)
    return None if out is None else restore(out)
