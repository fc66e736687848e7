"""Pocket tanh and pocket sigmoid: a pre-scaling division, then seven linear pieces.

Both read a 257-entry table over the scaled range [-128, 128]; everything outside it
saturates. The tables (and the C code) are built from the piece definitions below, so the
definitions are the single source of truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ...core.arith import clamp, trunc_div
from .base import Activation, no_macros, tabulate

K_BIT = 8
"""The reference's pre-scaling exponent: tanh divides z by 2**K_BIT * fan_in."""
TABLE_LOW, TABLE_HIGH = -128, 128


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


def evaluate_pieces(pieces: Sequence[Piece], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(y, g)`` of the piecewise definition at every ``x`` (int64)."""
    x = np.asarray(x, dtype=np.int64)
    y = np.empty_like(x)
    g = np.empty_like(x)
    lower = np.iinfo(np.int64).min
    for p in pieces:
        m = (x >= lower) & (x < p.upper)
        y[m] = trunc_div(x[m] * p.mul, p.div) + p.add
        g[m] = p.g
        lower = p.upper
    return y, g


def tanh_divisor(fan_in: int, k: int = K_BIT) -> int:
    """The pocket tanh pre-scaling divisor ``2**k * fan_in``."""
    return (1 << k) * fan_in


def _sigmoid_divisor(fan_in: int) -> int:
    return 1 << K_BIT


def _piece_expression(p: Piece) -> str:
    """``x * mul / div + add`` in C, simplified (C's ``/`` truncates like trunc_div)."""
    if p.mul == 0:
        return str(p.add)
    term = "x" if p.mul == 1 else f"{p.mul} * x"
    if p.div != 1:
        term = f"{term} / {p.div}"
    if p.add:
        term += f" {'+' if p.add > 0 else '-'} {abs(p.add)}"
    return term


def piecewise_c(name: str, doc: str, pieces: Sequence[Piece], signature: str, x: str) -> str:
    """The C function of a piecewise activation (clip to the table's range, then pieces)."""
    lines = [
        f"/* {doc} */",
        f"static int32_t {name}({signature})",
        "{",
        f"    int32_t x = {x};",
        f"    if (x < {TABLE_LOW}) x = {TABLE_LOW};  /* the table's range; outside it is flat */",
        f"    if (x > {TABLE_HIGH}) x = {TABLE_HIGH};",
    ]
    for p in pieces[:-1]:
        lines.append(f"    if (x < {p.upper}) {{ *g = {p.g}; return {_piece_expression(p)}; }}")
    last = pieces[-1]
    lines += [f"    *g = {last.g};", f"    return {_piece_expression(last)};", "}"]
    return "\n".join(lines)


def _tanh_macros(layer: str, fan_in: int) -> list[str]:
    return [f"#define {layer}_TANH_DIVISOR {tanh_divisor(fan_in)}  /* 2^{K_BIT} * fan_in */"]


def _piecewise(name, pieces, divisor, doc, signature, x, call, macros=no_macros) -> Activation:
    table = tabulate(lambda v, _: evaluate_pieces(pieces, v), TABLE_LOW, TABLE_HIGH, divisor)

    def function(z: np.ndarray, fan_in: int) -> tuple[np.ndarray, np.ndarray]:
        i = clamp(trunc_div(z, divisor(fan_in)), TABLE_LOW, TABLE_HIGH)
        i -= TABLE_LOW
        return table.y[i], table.g[i]

    function.__doc__ = doc
    return Activation(
        name=name,
        function=function,
        out_bound=int(np.abs(table.y).max()),
        g_max=int(table.g.max()),
        table=table,
        c_source=piecewise_c(name, doc, pieces, signature, x),
        c_call=call,
        c_layer_macros=macros,
    )


POCKET_TANH = _piecewise(
    "pocket_tanh",
    TANH_PIECES,
    tanh_divisor,
    f"Pocket tanh: x = z / divisor (divisor = 2^{K_BIT} * fan_in), 7 linear pieces.",
    "int32_t z, int32_t divisor, int32_t *g",
    "z / divisor",
    "pocket_tanh({z}, {layer}_TANH_DIVISOR, {g})",
    _tanh_macros,
)
POCKET_SIGMOID = _piecewise(
    "pocket_sigmoid",
    SIGMOID_PIECES,
    _sigmoid_divisor,
    f"Pocket sigmoid: x = z / 2^{K_BIT}, 7 linear pieces onto [1, 127].",
    "int32_t z, int32_t *g",
    f"z / (1 << {K_BIT})",
    "pocket_sigmoid({z}, {g})",
)
