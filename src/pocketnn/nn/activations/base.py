"""What an activation is: one object with its function, bounds, table and C code.

Every activation is called as ``activation(z, fan_in)`` and returns ``(y, g)``: the output
and the "gradient inverse", an integer array with the local slope represented as ``1/g``,
so the backward pass multiplies by the slope with the truncating division ``delta / g``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Function = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True, eq=False)
class Table:
    """A tabulated activation: ``x = z / divisor(fan_in)`` (truncating), clipped to
    ``[low, low + len(y) - 1]``, then ``y[x - low]`` and ``g[x - low]``.

    Outside the table's range the activation is flat, so the clip is exact. The fused
    engine runs tabulated activations in compiled code from exactly these arrays.
    """

    low: int
    y: np.ndarray = field(repr=False)
    g: np.ndarray = field(repr=False)
    divisor: Callable[[int], int] = field(repr=False)

    @property
    def high(self) -> int:
        return self.low + len(self.y) - 1


def no_macros(layer: str, fan_in: int) -> list[str]:
    """Most activations need no per-layer constant in C."""
    return []


@dataclass(frozen=True, eq=False)
class Activation:
    """An integer activation and everything other parts need to know about it.

    Attributes
    ----------
    name : the name used in model files and on the command line
    function : ``(z, fan_in) -> (y, g)`` on int64 arrays
    out_bound : the largest ``|y|`` for any int32 ``z``
    g_max : the largest gradient inverse (every ``g`` is at least 1)
    table : the lookup table when there is one (used by the fused engine), else None
    c_source : the C99 definition of ``int32_t NAME(int32_t z, [int32_t divisor,]
        int32_t *g)``, or None when the C exporter cannot emit it
    c_call : the C call, with ``{z}``, ``{g}`` and ``{layer}`` placeholders (``{layer}``:
        the layer's upper-case C name, which prefixes the macros of ``c_layer_macros``)
    c_layer_macros : ``(layer, fan_in) ->`` the ``#define`` lines the call needs in a layer
    elementwise : False for activations that normalise a whole row (pocket softmax)
    """

    name: str
    function: Function = field(repr=False)
    out_bound: int
    g_max: int
    table: Table | None = None
    c_source: str | None = field(default=None, repr=False)
    c_call: str | None = None
    c_layer_macros: Callable[[str, int], list[str]] = field(default=no_macros, repr=False)
    elementwise: bool = True

    def __call__(self, z: np.ndarray, fan_in: int) -> tuple[np.ndarray, np.ndarray]:
        return self.function(z, fan_in)


def tabulate(function: Function, low: int, high: int, divisor: Callable[[int], int]) -> Table:
    """The table of ``function`` on ``[low, high]`` (it must be flat outside that range)."""
    x = np.arange(low, high + 1, dtype=np.int64)
    y, g = function(x, 1)
    return Table(low, np.asarray(y, dtype=np.int64), np.asarray(g, dtype=np.int64), divisor)
