"""The pocket activation family: piecewise-linear, integer in and integer out.

Every activation is called as ``activation(z, fan_in)`` and returns ``(y, g)``: the output
and the "gradient inverse", an integer array with the local slope represented as ``1/g``,
so the backward pass multiplies by the slope with the truncating division ``delta / g``.
A flat (saturated) piece gets ``g = 127`` or ``INT32_MAX`` exactly as the reference has it.

Pocket tanh and pocket sigmoid first pre-scale ``z`` and then read a 257-entry table over
the scaled range [-128, 128]; everything outside it saturates. The tables are built once
from the piecewise definitions below, so the definitions are the single source of truth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .intmath import INT32_MAX, trunc_div

K_BIT = 8
"""The reference's pre-scaling exponent: tanh divides z by 2**K_BIT * fan_in."""

Activation = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


class Piece(NamedTuple):
    """``y = x * mul / div + add`` with gradient inverse ``g`` for ``x`` below ``upper``."""

    upper: int
    mul: int
    div: int
    add: int
    g: int


# Columns: upper bound (exclusive), then y = x*mul/div + add and g. The last row has no bound.
TANH_PIECES = (
    Piece(-127, 0, 1, -127, 127),
    Piece(-74, 1, 4, -88, 8),
    Piece(-31, 1, 1, -32, 2),
    Piece(32, 2, 1, 0, 1),
    Piece(75, 1, 1, 32, 2),
    Piece(128, 1, 4, 88, 8),
    Piece(2**62, 0, 1, 127, 127),
)
SIGMOID_PIECES = (
    Piece(-127, 0, 1, 1, 127),
    Piece(-74, 1, 8, 20, 8),
    Piece(-31, 1, 2, 48, 2),
    Piece(32, 1, 1, 64, 1),
    Piece(75, 1, 2, 80, 2),
    Piece(128, 1, 8, 108, 8),
    Piece(2**62, 0, 1, 127, 127),
)
TABLE_LOW, TABLE_HIGH = -128, 128


def _table(pieces: tuple[Piece, ...]) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(TABLE_LOW, TABLE_HIGH + 1, dtype=np.int64)
    y = np.empty_like(x)
    g = np.empty_like(x)
    lower = np.iinfo(np.int64).min
    for p in pieces:
        m = (x >= lower) & (x < p.upper)
        y[m] = trunc_div(x[m] * p.mul, p.div) + p.add
        g[m] = p.g
        lower = p.upper
    return y, g


_TANH_Y, _TANH_G = _table(TANH_PIECES)
_SIGMOID_Y, _SIGMOID_G = _table(SIGMOID_PIECES)


def _lookup(x: np.ndarray, table_y: np.ndarray, table_g: np.ndarray):
    i = np.clip(x, TABLE_LOW, TABLE_HIGH) - TABLE_LOW
    return table_y[i], table_g[i]


def tanh_divisor(fan_in: int, k: int = K_BIT) -> int:
    """The pocket tanh pre-scaling divisor ``2**k * fan_in``."""
    return (1 << k) * fan_in


def pocket_tanh(z: np.ndarray, fan_in: int, k: int = K_BIT) -> tuple[np.ndarray, np.ndarray]:
    """Pocket tanh: ``x = z / (2**k * fan_in)``, then 7 linear pieces onto [-127, 127]."""
    return _lookup(trunc_div(z, tanh_divisor(fan_in, k)), _TANH_Y, _TANH_G)


def pocket_sigmoid(z: np.ndarray, fan_in: int, k: int = K_BIT) -> tuple[np.ndarray, np.ndarray]:
    """Pocket sigmoid: ``x = z / 2**k``, then 7 linear pieces onto [1, 127]."""
    return _lookup(trunc_div(z, 1 << k), _SIGMOID_Y, _SIGMOID_G)


def rescale(z: np.ndarray, fan_in: int, k: int = K_BIT) -> tuple[np.ndarray, np.ndarray]:
    """Rescale: ``y = z / 2**k`` with ``g = 1``."""
    y = trunc_div(z, 1 << k)
    return y, np.ones_like(y)


def _flat_outside(inside: np.ndarray, g_inside) -> np.ndarray:
    """``g_inside`` where the piece has a slope, INT32_MAX (no gradient) elsewhere."""
    return np.where(inside, g_inside, INT32_MAX).astype(np.int64)


def pocket_relu8bit(z: np.ndarray, fan_in: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pocket ReLU 8-bit: ``y = clamp(z, 0, 127)``; ``g = 1`` inside, INT32_MAX where clamped."""
    z = np.asarray(z, dtype=np.int64)
    return np.clip(z, 0, 127), _flat_outside((z >= 0) & (z <= 127), 1)


def pocket_leakyrelu(z: np.ndarray, fan_in: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pocket leaky ReLU: ``z`` (g 1) on [0, 32767), ``z/5`` (g 5) on [-32767, 0), else ±32767."""
    z = np.asarray(z, dtype=np.int64)
    negative = (z >= -32767) & (z < 0)
    positive = (z >= 0) & (z < 32767)
    y = np.where(negative, trunc_div(z, 5), np.clip(z, -32767, 32767))
    return y, _flat_outside(negative | positive, np.where(negative, 5, 1))


def as_is(z: np.ndarray, fan_in: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Identity: ``y = z``, ``g = 1``."""
    y = np.array(z, dtype=np.int64)
    return y, np.ones_like(y)


def pocket_softmax(z: np.ndarray, fan_in: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pocket softmax per row: positives times ``INT32_MAX / (sum of positives)``, others 0."""
    z = np.asarray(z, dtype=np.int64)
    positive = np.maximum(z, 0)
    total = positive.sum(axis=-1, keepdims=True)
    y = positive * (INT32_MAX // np.maximum(total, 1))
    return y, _flat_outside(y != 0, 1)


PLU_ALPHA_INV = 10
PLU_C = 1


def plu(z: np.ndarray, fan_in: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise linear unit ``max(a(x+c)-c, min(a(x-c)+c, x))``, a = 1/10, c = 1.

    Implemented from the published formula (the reference's version is broken), with
    truncating division, clamped to [-127, 127]. ``g`` is 1 on the identity piece, 10 on the
    two outer slopes and 127 where clamped.
    """
    x = np.asarray(z, dtype=np.int64)
    upper = trunc_div(x - PLU_C, PLU_ALPHA_INV) + PLU_C
    lower = trunc_div(x + PLU_C, PLU_ALPHA_INV) - PLU_C
    raw = np.maximum(lower, np.minimum(upper, x))
    y = np.clip(raw, -127, 127)
    g = np.where(raw != y, 127, np.where(raw == x, 1, PLU_ALPHA_INV))
    return y, g.astype(np.int64)


ACTIVATIONS: dict[str, Activation] = {
    "pocket_tanh": pocket_tanh,
    "pocket_sigmoid": pocket_sigmoid,
    "pocket_relu8bit": pocket_relu8bit,
    "pocket_leakyrelu": pocket_leakyrelu,
    "plu": plu,
    "pocket_softmax": pocket_softmax,
    "rescale": rescale,
    "as_is": as_is,
}


def get_activation(name: str) -> Activation:
    """Look an activation up by name; an unknown name lists the valid ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None
