"""Integer arithmetic with C semantics, and the one matrix product every layer uses.

Everything here works on integer numpy arrays. Division truncates toward zero as in C
(Python's ``//`` floors). Results are computed exactly in int64 and then checked against the
int32 range of the reference implementation: a value that leaves it raises
:class:`IntegerOverflowError` naming the layer and the operation, unless the run asks for
the ``"wrap"`` policy, which emulates the reference's 32-bit two's-complement arithmetic.

The matrix product has interchangeable engines that all return the same integers:

``"int"``
    numpy's integer matmul on int64: no floating-point instruction touches model values.
``"blas"``
    float64 BLAS, used only when a bound check proves every partial sum is an integer of
    magnitude below 2**53 (so float64 represents it exactly, whatever order BLAS adds in);
    otherwise it falls back to ``"int"``. This is the default: same bits, much faster.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)
INT64_SAFE = 2**63 - 1
FLOAT64_EXACT = 2**53

ENGINES = ("blas", "int")
OVERFLOW_POLICIES = ("raise", "wrap")


class IntegerOverflowError(OverflowError):
    """A value left the int32 range that the reference (and the generated C) computes in."""


@dataclass
class Settings:
    """Process-wide arithmetic settings; change them with :func:`configure`."""

    engine: str = "blas"
    overflow: str = "raise"


settings = Settings()


@contextlib.contextmanager
def configure(engine: str | None = None, overflow: str | None = None) -> Iterator[Settings]:
    """Temporarily select the matmul engine and/or the overflow policy.

    Examples
    --------
    >>> with configure(engine="int"):
    ...     pass
    """
    _check_choice("engine", engine, ENGINES)
    _check_choice("overflow", overflow, OVERFLOW_POLICIES)
    saved = Settings(settings.engine, settings.overflow)
    try:
        if engine is not None:
            settings.engine = engine
        if overflow is not None:
            settings.overflow = overflow
        yield settings
    finally:
        settings.engine, settings.overflow = saved.engine, saved.overflow


def _check_choice(what: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")


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
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if not np.all(b):
        raise ZeroDivisionError("trunc_div: division by zero")
    q = a // b
    # floor and truncation differ only for inexact negative quotients: step those up by one.
    q += (q < 0) & (q * b != a)
    return q


def isqrt(n: int) -> int:
    """Integer square root (the largest r with r*r <= n)."""
    if n < 0:
        raise ValueError(f"isqrt of a negative number: {n}")
    return math.isqrt(int(n))


def clamp(x: np.ndarray, low: int, high: int) -> np.ndarray:
    """Clamp ``x`` into ``[low, high]`` in place and return it."""
    return np.clip(x, low, high, out=x)


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Reduce int64 values modulo 2**32 into the int32 range (two's-complement wrap)."""
    return ((np.asarray(x, dtype=np.int64) - INT32_MIN) % 2**32) + INT32_MIN


def guard(x: np.ndarray, where: str) -> np.ndarray:
    """Check that int64 ``x`` fits int32, under the current overflow policy.

    ``where`` names the layer and operation, for example ``"fc1: forward X @ W + b"``.
    """
    if x.size == 0:
        return x
    lo, hi = int(x.min()), int(x.max())
    if lo >= INT32_MIN and hi <= INT32_MAX:
        return x
    if settings.overflow == "wrap":
        return wrap_int32(x)
    worst = hi if hi > INT32_MAX else lo
    raise IntegerOverflowError(
        f"{where}: value {worst} is outside the int32 range [{INT32_MIN}, {INT32_MAX}] "
        "(set overflow='wrap' to emulate the reference's 32-bit wrap-around)"
    )


def magnitude(x: np.ndarray) -> int:
    """An upper bound of ``|x|``: from the dtype for 8/16-bit arrays, else measured."""
    if x.dtype.itemsize <= 2:
        info = np.iinfo(x.dtype)
        return max(-int(info.min), int(info.max))
    if x.size == 0:
        return 0
    return max(-int(x.min()), int(x.max()))


_workspace: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}


def _as_float64(x: np.ndarray, slot: int) -> np.ndarray:
    """Copy integer ``x`` into a reused float64 buffer (fresh large arrays cost page faults)."""
    key = (slot, x.shape)
    buf = _workspace.get(key)
    if buf is None:
        buf = _workspace[key] = np.empty(x.shape, dtype=np.float64)
    np.copyto(buf, x)
    return buf


def exact_matmul(a: np.ndarray, b: np.ndarray, where: str = "matmul") -> tuple[np.ndarray, int]:
    """The exact product ``a @ b`` as int64 by the current engine, and the bound it used.

    The bound ``max|a| * max|b| * k`` caps every partial sum, so below 2**53 the float64
    BLAS path is exact in any summation order; above it the int64 path is used, and above
    2**63 the product is refused rather than risk a wrapped accumulator.
    """
    if a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
        raise TypeError(f"{where}: expected integer arrays, got {a.dtype} and {b.dtype}")
    bound = magnitude(a) * magnitude(b) * a.shape[-1]
    if settings.engine == "blas" and bound < FLOAT64_EXACT:
        return np.matmul(_as_float64(a, 0), _as_float64(b, 1)).astype(np.int64), bound
    if bound > INT64_SAFE:
        raise IntegerOverflowError(
            f"{where}: |a| * |b| * k = {bound} could overflow int64 accumulators"
        )
    return np.matmul(a.astype(np.int64, copy=False), b.astype(np.int64, copy=False)), bound


def matmul(
    a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None, where: str = "matmul"
) -> np.ndarray:
    """Exact integer product ``a @ b`` (plus ``bias``, broadcast) as int64, int32-checked.

    Parameters
    ----------
    a, b : integer arrays of shapes (n, k) and (k, m)
    bias : optional integer array broadcastable to (n, m), added exactly
    where : the layer and operation, used in error messages

    Returns
    -------
    int64 array of shape (n, m), identical for every engine, checked by :func:`guard`.
    """
    out, bound = exact_matmul(a, b, where)
    if bias is not None:
        bias = require_integer(bias, where)
        out += bias
        bound += magnitude(bias)
    if bound > INT32_MAX:
        out = guard(out, where)
    return out
