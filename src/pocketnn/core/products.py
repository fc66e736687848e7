"""The exact integer matrix product every layer uses, on the context's engine.

Why every engine gives the same bits: integer addition is associative, so any summation
order gives the exact sum as long as no partial sum leaves the accumulator's range; each
engine only runs where its accumulator provably holds every partial sum.
"""

from __future__ import annotations

import numpy as np

from ..engines.blas import blas_product
from ..engines.reference import int_product
from .arith import FLOAT64_EXACT, INT32_MAX, INT64_MAX, extremes, magnitude, require_integer
from .context import INTEGER_ONLY_ENGINES, current
from .overflow import IntegerOverflowError, guard


def _peak(x: np.ndarray, bound: int, other: np.ndarray) -> int:
    """``max|x|``, measured for a 16-bit array no larger than the other operand (weights:
    far below their dtype's bound, and cheap to scan next to the product), else ``bound``
    (already measured for wider dtypes, tight for 8-bit ones)."""
    if x.dtype.itemsize != 2 or x.size == 0 or x.size > other.size:
        return bound
    lo, hi = extremes(x)
    return max(-lo, hi)


def exact_matmul(a: np.ndarray, b: np.ndarray, where: str = "matmul") -> tuple[np.ndarray, int]:
    """The exact product ``a @ b`` as int64 by the current engine, and the bound it used.

    The bound ``max|a| * max|b| * k`` caps every partial sum, so below 2**53 the BLAS path
    is exact in any summation order (float64, or float32 slices where a tighter bound of one
    product allows: :func:`~pocketnn.engines.blas.blas_product`); above it, and on the
    integer-only engines, an integer path is used (the ``compiled`` engine's C product,
    :func:`~pocketnn.engines.compiled.gemm.product`, with int32 or int64 lanes as the bound
    allows; else :func:`~pocketnn.engines.reference.int_product`), and above 2**63 the
    product is refused rather than risk a wrapped accumulator.
    """
    if a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
        raise TypeError(f"{where}: expected integer arrays, got {a.dtype} and {b.dtype}")
    bound_a, bound_b = magnitude(a), magnitude(b)
    unit = bound_a * bound_b
    bound = unit * a.shape[-1]
    engine = current().engine
    if engine not in INTEGER_ONLY_ENGINES and bound < FLOAT64_EXACT:
        return blas_product(a, b, _peak(a, bound_a, b) * _peak(b, bound_b, a)), bound
    if bound > INT64_MAX:
        raise IntegerOverflowError(
            f"{where}: |a| * |b| * k = {bound} could overflow int64 accumulators"
        )
    if engine == "compiled":
        # imported here: the engine's package imports the layers, which import this module
        from ..engines.compiled.gemm import product

        out = product(a, b, _peak(a, bound_a, b), _peak(b, bound_b, a))
        if out is not None:
            return out, bound
    return int_product(a, b, unit), bound


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
    int64 array of shape (n, m), identical for every engine, checked by
    :func:`~pocketnn.core.overflow.guard`.
    """
    out, bound = exact_matmul(a, b, where)
    if bias is not None:
        bias = require_integer(bias, where)
        out += bias
        bound += magnitude(bias)
    if bound > INT32_MAX:
        out = guard(out, where)
    return out


def active_columns(a: np.ndarray) -> np.ndarray | None:
    """Indices of the columns of ``a`` that are non-zero somewhere, or None if nearly all are.

    A batch of raw pixels is mostly zeros: an all-zero input column contributes exactly
    nothing to ``a @ W`` and gives row ``W[k]`` an exactly zero gradient, so products and
    updates may skip it without changing a single bit.
    """
    used = np.flatnonzero(a.any(axis=0))
    return None if 10 * used.size > 9 * a.shape[1] else used  # skipping < 10 % does not pay
