"""Integer arithmetic with C semantics, and the one matrix product every layer uses.

Everything here works on integer numpy arrays. Division truncates toward zero as in C
(Python's ``//`` floors). Results are computed exactly in int64 and then checked against the
int32 range of the reference implementation: a value that leaves it raises
:class:`IntegerOverflowError` naming the layer and the operation, unless the run asks for
the ``"wrap"`` policy, which emulates the reference's 32-bit two's-complement arithmetic.

The matrix product has interchangeable engines that all return the same integers:

``"int"``
    integer units only: numpy's ``einsum`` in int32 over slices of the shared dimension
    short enough that the bound ``max|a| * max|b| * k`` proves no int32 partial sum can
    overflow (the slices are then added in int64), else int64 throughout. No floating-point
    instruction touches model values.
``"blas"``
    float64 BLAS, used only when a bound check proves every partial sum is an integer of
    magnitude below 2**53 (so float64 represents it exactly, whatever order BLAS adds in);
    otherwise it falls back to ``"int"``. Same bits as ``"int"``, much faster.
``"fused"``
    ``"blas"`` for every product, and a DFA training step whose small operations run in
    compiled integer kernels (:mod:`pocketnn.fused`, needs numba: ``pocketnn[fast]``). The
    default when numba is installed, else ``"blas"`` is.

Why both give the same bits: integer addition is associative, so any summation order gives
the exact sum as long as no partial sum leaves the range of the accumulator; each engine
only runs where its accumulator provably holds every partial sum.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)
INT64_SAFE = 2**63 - 1
FLOAT64_EXACT = 2**53
INT32_EXACT = 2**31

ENGINES = ("fused", "blas", "int")
FUSED_HINT = "the 'fused' engine needs numba: pip install 'pocketnn[fast]'"
DEFAULT_ENGINE = "fused" if importlib.util.find_spec("numba") is not None else "blas"
OVERFLOW_POLICIES = ("raise", "wrap")


class IntegerOverflowError(OverflowError):
    """A value left the int32 range that the reference (and the generated C) computes in."""


@dataclass
class Settings:
    """Process-wide arithmetic settings; change them with :func:`configure`."""

    engine: str = DEFAULT_ENGINE
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
    if engine == "fused" and importlib.util.find_spec("numba") is None:
        raise ImportError(FUSED_HINT)
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


def stochastic_div_(a: np.ndarray, d: int, rng: np.random.Generator) -> np.ndarray:
    """Divide signed integer ``a`` in place by the positive integer ``d``, rounding at random.

    Each quotient is ``floor(a / d)`` plus one with probability ``(a mod d) / d`` (an exact
    integer draw from [0, d)), so its expectation is exactly ``a / d``: small updates are
    kept on average instead of being truncated to zero. Returns ``a``.
    """
    if d <= 0:
        raise ZeroDivisionError(f"stochastic_div_: divisor must be positive, got {d}")
    remainder = a % d
    a //= d
    a += rng.integers(0, d, size=a.shape, dtype=a.dtype) < remainder
    return a


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
    lo, hi = _extremes(x)
    if lo >= INT32_MIN and hi <= INT32_MAX:
        return x
    if settings.overflow == "wrap":
        return wrap_int32(x)
    worst = hi if hi > INT32_MAX else lo
    raise IntegerOverflowError(
        f"{where}: value {worst} is outside the int32 range [{INT32_MIN}, {INT32_MAX}] "
        "(set overflow='wrap' to emulate the reference's 32-bit wrap-around)"
    )


def _extremes(x: np.ndarray) -> tuple[int, int]:
    """``(min, max)`` of a non-empty array, as Python integers."""
    return int(np.minimum.reduce(x, axis=None)), int(np.maximum.reduce(x, axis=None))


@functools.cache
def _dtype_magnitude(dtype: np.dtype) -> int:
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
        return _dtype_magnitude(x.dtype)
    if x.size == 0:
        return 0
    lo, hi = _extremes(x)
    return max(-lo, hi)


_workspace: dict[int, np.ndarray] = {}


def _float64_buffer(shape: tuple[int, ...], slot: int) -> np.ndarray:
    """A reused float64 array of ``shape`` (fresh large arrays cost page faults).

    One flat buffer per slot, grown to the largest size seen and viewed at ``shape``, so
    batches of varying width (see :func:`active_columns`) reuse the same memory.
    """
    size = math.prod(shape)
    buf = _workspace.get(slot)
    if buf is None or buf.size < size:
        buf = _workspace[slot] = np.empty(size, dtype=np.float64)
    return buf[:size].reshape(shape)


def _as_float64(x: np.ndarray, slot: int) -> np.ndarray:
    """Copy integer ``x`` into the reused float64 buffer ``slot``."""
    buf = _float64_buffer(x.shape, slot)
    np.copyto(buf, x)
    return buf


def _blas_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` through float64 BLAS as int64; the caller has proven it exact (< 2**53)."""
    out = _float64_buffer((a.shape[0], b.shape[1]), 2)
    np.matmul(_as_float64(a, 0), _as_float64(b, 1), out=out)
    return out.astype(np.int64)


def _int_product(a: np.ndarray, b: np.ndarray, unit: int) -> np.ndarray:
    """``a @ b`` with integer units only, as int64.

    ``unit = max|a| * max|b|`` bounds one product. Slices of the shared dimension of at most
    ``(2**31 - 1) // unit`` terms keep every int32 partial sum exact; when slices would be
    too thin to pay off, the product is accumulated in int64 instead.
    """
    k = a.shape[1]
    span = (INT32_EXACT - 1) // max(unit, 1)
    if span < min(k, 64):
        return np.einsum("ik,kj->ij", a.astype(np.int64), b.astype(np.int64))
    a32, b32 = a.astype(np.int32), b.astype(np.int32)
    out = None
    for start in range(0, k, span):
        part = np.einsum("ik,kj->ij", a32[:, start : start + span], b32[start : start + span])
        out = part.astype(np.int64) if out is None else np.add(out, part, out=out)
    if out is None:  # k == 0
        out = np.zeros((a.shape[0], b.shape[1]), dtype=np.int64)
    return out


def exact_matmul(a: np.ndarray, b: np.ndarray, where: str = "matmul") -> tuple[np.ndarray, int]:
    """The exact product ``a @ b`` as int64 by the current engine, and the bound it used.

    The bound ``max|a| * max|b| * k`` caps every partial sum, so below 2**53 the float64
    BLAS path is exact in any summation order; above it the integer path is used, and above
    2**63 the product is refused rather than risk a wrapped accumulator.
    """
    if a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
        raise TypeError(f"{where}: expected integer arrays, got {a.dtype} and {b.dtype}")
    unit = magnitude(a) * magnitude(b)
    bound = unit * a.shape[-1]
    if settings.engine != "int" and bound < FLOAT64_EXACT:
        return _blas_product(a, b), bound
    if bound > INT64_SAFE:
        raise IntegerOverflowError(
            f"{where}: |a| * |b| * k = {bound} could overflow int64 accumulators"
        )
    return _int_product(a, b, unit), bound


def active_columns(a: np.ndarray, max_fraction: float = 0.9) -> np.ndarray | None:
    """Indices of the columns of ``a`` that are non-zero somewhere, or None if nearly all are.

    A batch of raw pixels is mostly zeros: an all-zero input column contributes exactly
    nothing to ``a @ W`` and gives row ``W[k]`` an exactly zero gradient, so products and
    updates may skip it without changing a single bit.
    """
    used = np.flatnonzero(a.any(axis=0))
    return None if used.size > max_fraction * a.shape[1] else used


@functools.cache
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: without it BLAS keeps its own thread count
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def single_thread_blas() -> Iterator[None]:
    """Run BLAS on one thread inside the block (when threadpoolctl is installed).

    The products of a training step are small: BLAS threads only add synchronisation, and
    on a machine whose cores are busy with other work they make a step many times slower.
    """
    controller = _blas_controller()
    if controller is None:
        yield
        return
    limiter = controller.limit(limits=1, user_api="blas")
    try:
        yield
    finally:
        limiter.restore_original_limits()


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
