"""Integer arithmetic with C semantics: truncating and stochastic division, bounds, dtypes.

Everything here works on integer numpy arrays. Division truncates toward zero as in C
(Python's ``//`` floors).
"""

from __future__ import annotations

import functools
import math

import numpy as np

INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)
INT64_MAX = 2**63 - 1
FLOAT64_EXACT = 2**53
"""Every integer of smaller magnitude is exactly a float64, and so is every partial sum."""
INT32_EXACT = 2**31


def require_integer(x: np.ndarray, what: str) -> np.ndarray:
    """Return ``x`` as an array, refusing anything that is not of an integer dtype."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"{what}: expected an integer array, got dtype {x.dtype}")
    return x


def trunc_div(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Integer division truncating toward zero, as C's ``/`` (``-7 / 2 == -3``).

    Both operands are broadcast and computed in int64. A zero divisor raises
    ``ZeroDivisionError`` (the reference would return INT32_MAX; no activation here ever
    produces a zero gradient-inverse).
    """
    if isinstance(b, (int, np.integer)) and b != 0:
        q = np.array(a, dtype=np.int64)  # a fresh copy, divided in place
        trunc_div_scalar_(q, abs(int(b)))
        return q if b > 0 else np.negative(q, out=q)
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if not np.all(b):
        raise ZeroDivisionError("trunc_div: division by zero")
    # np.fmod is C's %, so a - fmod(a, b) is b * trunc(a / b): an exact floor division.
    q = np.fmod(a, b)
    np.subtract(a, q, out=q)
    q //= b
    return q


def trunc_div_scalar_(a: np.ndarray, d: int) -> np.ndarray:
    """Divide signed integer ``a`` in place by the positive integer ``d``, truncating.

    ``(a + ((a >> bits-1) & (d - 1))) // d``: adding ``d - 1`` to the negative values turns
    numpy's floor division (fast for a scalar divisor) into truncation. ``d - 1`` must fit
    ``a``'s dtype. Returns ``a``.
    """
    if d <= 0:
        raise ZeroDivisionError(f"trunc_div_scalar_: divisor must be positive, got {d}")
    if d > 1:
        bias = np.right_shift(a, 8 * a.dtype.itemsize - 1)
        bias &= d - 1
        a += bias
        a //= d
    return a


def stochastic_div_(a: np.ndarray, d: int, draws: np.ndarray) -> np.ndarray:
    """Divide signed integer ``a`` in place by the positive integer ``d``, rounding at random.

    ``draws`` holds one uniform integer in ``[0, d)`` per element. Each quotient is
    ``floor(a / d)`` plus one when its draw is below ``a mod d``, so its expectation is
    exactly ``a / d``: small updates are kept on average instead of being truncated to zero.
    Returns ``a``.
    """
    if d <= 0:
        raise ZeroDivisionError(f"stochastic_div_: divisor must be positive, got {d}")
    remainder = a % d
    a //= d
    a += draws < remainder
    return a


def isqrt(n: int) -> int:
    """Integer square root (the largest r with r*r <= n)."""
    if n < 0:
        raise ValueError(f"isqrt of a negative number: {n}")
    return math.isqrt(int(n))


def clamp(x: np.ndarray, low: int, high: int) -> np.ndarray:
    """Clamp ``x`` into ``[low, high]`` in place and return it (both must fit its dtype).

    Bounds are passed as scalars of ``x``'s dtype (numpy's slow path otherwise), and small
    arrays go through two ufuncs, which beat ``np.clip``'s set-up; large ones through clip.
    """
    lo, hi = x.dtype.type(low), x.dtype.type(high)
    if x.size > 2048:
        return np.clip(x, lo, hi, out=x)
    np.minimum(x, hi, out=x)
    return np.maximum(x, lo, out=x)


def extremes(x: np.ndarray) -> tuple[int, int]:
    """``(min, max)`` of a non-empty array, as Python integers."""
    return int(np.minimum.reduce(x, axis=None)), int(np.maximum.reduce(x, axis=None))


@functools.cache
def dtype_magnitude(dtype: np.dtype) -> int:
    """The largest magnitude an integer dtype holds (128 for int8)."""
    info = np.iinfo(dtype)
    return max(-int(info.min), int(info.max))


def signed_dtype_for(bound: int, smallest: type = np.int8) -> np.dtype:
    """The smallest signed integer dtype (at least ``smallest``) holding ``[-bound, bound]``."""
    for dtype in (np.int8, np.int16, np.int32, np.int64):
        if np.dtype(dtype).itemsize >= np.dtype(smallest).itemsize and bound <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"no integer type holds values up to {bound}")


def magnitude(x: np.ndarray) -> int:
    """An upper bound of ``|x|``: from the dtype for 8/16-bit arrays, else measured."""
    if x.dtype.itemsize <= 2:
        return dtype_magnitude(x.dtype)
    if x.size == 0:
        return 0
    lo, hi = extremes(x)
    return max(-lo, hi)
