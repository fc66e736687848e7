"""The int32 range check every result passes, under the context's overflow policy.

Results are computed exactly in int64 and then checked against the int32 range of the
reference implementation (and of the generated C): a value that leaves it raises
:class:`IntegerOverflowError` naming the layer and the operation, unless the context asks
for ``overflow="wrap"``, which emulates the reference's 32-bit two's-complement arithmetic.
"""

from __future__ import annotations

import numpy as np

from ..errors import PocketnnError
from .arith import INT32_MAX, INT32_MIN, extremes
from .context import current


class IntegerOverflowError(PocketnnError, OverflowError):
    """A value left the int32 range that the reference (and the generated C) computes in."""


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Reduce int64 values modulo 2**32 into the int32 range (two's-complement wrap)."""
    return ((np.asarray(x, dtype=np.int64) - INT32_MIN) % 2**32) + INT32_MIN


def overflow_error(where: str, worst: int) -> IntegerOverflowError:
    """The error for value ``worst`` found outside int32 at ``where``."""
    return IntegerOverflowError(
        f"{where}: value {worst} is outside the int32 range [{INT32_MIN}, {INT32_MAX}] "
        "(set overflow='wrap' to emulate the reference's 32-bit wrap-around)"
    )


def guard(x: np.ndarray, where: str) -> np.ndarray:
    """Check that int64 ``x`` fits int32, under the current overflow policy.

    ``where`` names the layer and operation, for example ``"fc1: forward a @ W + b"``.
    Returns ``x`` (or its wrapped copy under ``overflow="wrap"``).
    """
    if x.size == 0:
        return x
    lo, hi = extremes(x)
    if lo >= INT32_MIN and hi <= INT32_MAX:
        return x
    if current().overflow == "wrap":
        return wrap_int32(x)
    raise overflow_error(where, hi if hi > INT32_MAX else lo)
