"""The ``compiled`` engine's exact integer matrix product (``matmul.c``).

:func:`~pocketnn.core.products.exact_matmul` sends every product here under the
``compiled`` engine (the layered steps: convolutions, backprop, dense layers outside the
whole-epoch kernels), with ``max|a|`` and ``max|b|`` as it bounds them. The lanes follow
from that bound as the reference product's slices do (:mod:`pocketnn.engines.reference`):
int32 lanes summing chunks of at most ``INT32_MAX // (max|a| * max|b|)`` terms where such
chunks are not too thin, int64 lanes otherwise; operands within int16 go two terms per
32-bit lane (``vpdpwssd``/``pmaddwd``). Operands are read in their own dtype and memory
layout (``cols.T``, ``W.T``) and narrowed while they are packed, which the magnitudes
prove exact. Large products are split by rows over the context's threads
(``configure(threads=N)``); every element is computed by the same instructions whatever
the split, so the bits never depend on it.
"""

from __future__ import annotations

import numpy as np

from ...core.arith import INT32_MAX
from ...core.context import current, workspace
from .build import library

CODES = {
    np.dtype(dtype): code
    for code, dtype in enumerate((np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64))
}
"""The operand dtypes ``matmul.c`` reads, by their code there."""
PAIRS, WORDS, WIDE = 0, 1, 2
"""Lane kinds of ``matmul.c``: int16 pairs or int32 values in int32 lanes, int32 values in
int64 lanes."""
MIN_SPAN = 64
"""int32 chunks of fewer terms add up in int64 more often than int64 lanes cost."""
INT16_DTYPES = (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int16))
WORK_SLOT = 16
"""This thread's work buffer for the product (:func:`~pocketnn.core.context.workspace`;
the BLAS engine's buffers use slots 0-3)."""


def lanes(
    a_dtype: np.dtype, b_dtype: np.dtype, peak_a: int, peak_b: int, k: int
) -> tuple[int, int] | None:
    """``(lane kind, span)`` for operands of these dtypes and magnitudes with ``k`` shared
    terms, or None for values beyond int32 (the reference product runs them).

    ``span`` is how many terms an int32 lane may sum: ``INT32_MAX // (peak_a * peak_b)``
    bounds every partial sum of that many terms by ``INT32_MAX``.
    """
    if max(peak_a, peak_b) > INT32_MAX:
        return None
    unit = peak_a * peak_b
    span = INT32_MAX // unit if unit else max(k, 1)
    if span < min(k, MIN_SPAN):
        return WIDE, max(k, 1)
    paired = all(
        d in INT16_DTYPES or p <= 2**15 - 1 for d, p in ((a_dtype, peak_a), (b_dtype, peak_b))
    )
    return (PAIRS if paired else WORDS), span


def _element_strides(x: np.ndarray) -> tuple[int, int] | None:
    size = x.dtype.itemsize
    if x.strides[0] % size or x.strides[1] % size:
        return None
    return x.strides[0] // size, x.strides[1] // size


def product(a: np.ndarray, b: np.ndarray, peak_a: int, peak_b: int) -> np.ndarray | None:
    """``a @ b`` as int64 for 2-D integer ``a`` (n, k) and ``b`` (k, m) with
    ``|a| <= peak_a`` and ``|b| <= peak_b``; None for dtypes or values ``matmul.c`` does not
    take (the reference product then runs them, or raises numpy's error for shapes that do
    not match). The caller has checked that ``peak_a * peak_b * k`` fits int64."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        return None
    if not (a.flags.aligned and b.flags.aligned):
        return None  # C reads whole elements at their own alignment
    code_a, code_b = CODES.get(a.dtype), CODES.get(b.dtype)
    stride_a, stride_b = _element_strides(a), _element_strides(b)
    kind = lanes(a.dtype, b.dtype, peak_a, peak_b, a.shape[1])
    if None in (code_a, code_b, stride_a, stride_b, kind):
        return None
    (n, k), m = a.shape, b.shape[1]
    threads = current().threads
    lib = library()
    size = lib.pnn_matmul_work(kind[0], k, m, threads)
    buffers = workspace()
    work = buffers.get(WORK_SLOT)
    if work is None or work.size < size:
        work = buffers[WORK_SLOT] = np.empty(size, dtype=np.uint8)
    out = np.empty((n, m), dtype=np.int64)
    status = lib.pnn_matmul(
        n, k, m,
        a.ctypes.data, code_a, *stride_a,
        b.ctypes.data, code_b, *stride_b,
        *kind, threads, out.ctypes.data, work.ctypes.data, work.size,
    )  # fmt: skip
    if status:
        raise RuntimeError(f"pnn_matmul refused its arguments ({status}): a bug in {__name__}")
    return out
