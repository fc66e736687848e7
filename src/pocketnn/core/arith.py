"""Integer arithmetic with C semantics: truncating and stochastic division, bounds, dtypes.

Everything here works on integer numpy arrays. Division truncates toward zero as in C
(Python's ``//`` floors).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

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

    Both operands are broadcast and computed in int64; the result is a new array, laid out
    in memory as ``a`` is when ``b`` is a scalar. A zero divisor raises
    ``ZeroDivisionError`` (the reference would return INT32_MAX; no activation here ever
    produces a zero gradient-inverse).
    """
    if isinstance(b, (int, np.integer)) and b != 0:
        d = abs(int(b))
        if 1 < d <= 1 << 62 and not d & (d - 1):
            q = shift_div(np.asarray(a, dtype=np.int64), d.bit_length() - 1)
        else:
            q = np.array(a, dtype=np.int64)  # a fresh copy, divided in place
            trunc_div_scalar_(q, d)
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


def shift_div(a: np.ndarray, k: int, out: np.ndarray | None = None) -> np.ndarray:
    """``a / 2**k`` truncating toward zero, into ``out`` (a new array like ``a`` if None).

    ``(a + ((a >> bits-1) & (2**k - 1))) >> k``: the bias turns the arithmetic shift's
    rounding toward minus infinity into truncation, and cannot overflow (it is added to
    negative values only). ``2**k - 1`` must fit ``a``'s dtype (``out`` may be wider).
    """
    if out is None:
        out = np.empty_like(a)
    np.right_shift(a, 8 * a.dtype.itemsize - 1, out=out)
    out &= (1 << k) - 1
    out += a
    out >>= k
    return out


def trunc_div_few(a: np.ndarray, b: np.ndarray, values: Iterable[int]) -> np.ndarray:
    """``trunc_div(a, b)``, bit for bit, faster when ``b`` takes only a few known ``values``
    (an activation's gradient inverses: e.g. 1, 8 and INT32_MAX).

    Each value's quotient is computed once over the whole array (a shift for a power of
    two; nothing for a value larger than every ``|a|``, whose quotient is 0) and kept
    where ``b`` equals it, in the narrowest of int16, int32 and int64 that holds ``a`` (one
    term per entry and ``|a / d| <= |a|``: nothing can overflow). The result is int64, laid
    out as ``a``. If some entry of ``b`` is not among ``values`` (or a shape or dtype is
    not plain), it falls back to :func:`trunc_div`.
    """
    a, b = np.asarray(a), np.asarray(b)
    divisors = sorted({int(v) for v in values})
    if (
        a.shape != b.shape
        or a.size == 0
        or a.dtype.kind != "i"
        or b.dtype.kind not in "iu"
        or not divisors
        or divisors[0] < 1
    ):
        return trunc_div(a, b)
    lo, hi = extremes(a)
    work = next(
        t for t in (np.int16, np.int32, np.int64) if np.iinfo(t).min <= lo <= hi <= np.iinfo(t).max
    )
    a = a.astype(work, copy=False)
    peak = max(-lo, hi)
    total = np.zeros_like(a) if divisors[0] > peak else np.empty_like(a)
    quotient = np.empty_like(a)
    covered, first = 0, True
    for d in divisors:
        where = np.equal(b, d)
        covered += np.count_nonzero(where)
        if d > peak:  # |a| < d: the quotient is 0
            continue
        if d == 1:
            term = a
        elif d & (d - 1):
            np.copyto(quotient, a)
            term = trunc_div_scalar_(quotient, d)
        else:
            term = shift_div(a, d.bit_length() - 1, out=quotient)
        if first:
            np.multiply(term, where, out=total)
            first = False
        else:
            np.multiply(term, where, out=quotient)
            total += quotient
    if covered != b.size:
        return trunc_div(a, b)
    return total.astype(np.int64, copy=False)


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
        if d & (d - 1):
            a //= d
        else:  # a power of two: the shift is the floor division, and cheaper
            a >>= d.bit_length() - 1
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
    quotient = a // d
    # a - floor(a / d) * d is a mod d; numpy divides by a scalar fast but takes the
    # remainder slowly. Exact even where d * quotient wraps: the remainder lies in [0, d)
    # and the arithmetic is modulo 2**bits.
    remainder = np.multiply(quotient, d)
    np.subtract(a, remainder, out=remainder)
    return np.add(quotient, draws < remainder, out=a)


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
