"""The BLAS product: float matrix multiply where a bound proves it exact.

The caller (:func:`pocketnn.core.products.exact_matmul`) has proven that every partial sum
is an integer below 2**53 in magnitude (2**24 where it asks for float32), so the float type
represents each one exactly and the result is the same integers whatever order BLAS adds
in. float32 halves the memory the operands are copied into and doubles BLAS's vector width.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

import numpy as np

from ..core.context import workspace

FLOAT32_EXACT = 2**24
"""Every integer of smaller magnitude is exactly a float32, and so is every partial sum."""
MIN_SPAN = 64
"""Thinner float32 slices cost more in BLAS calls than float64 costs in copies."""


def _buffer(
    buffers: dict[int, np.ndarray], shape: tuple[int, ...], slot: int, dtype: type
) -> np.ndarray:
    """A reused array of ``shape`` and float ``dtype`` from this thread's ``buffers``.

    One flat byte buffer per slot, grown to the largest size seen and viewed at ``shape``,
    so batches of varying width, and either float width, reuse the same memory.
    """
    size = math.prod(shape) * np.dtype(dtype).itemsize
    buf = buffers.get(slot)
    if buf is None or buf.size < size:
        buf = buffers[slot] = np.empty(size, dtype=np.uint8)
    return buf[:size].view(dtype).reshape(shape)


def _as_float(buffers: dict[int, np.ndarray], x: np.ndarray, slot: int, dtype: type) -> np.ndarray:
    if not x.flags.c_contiguous and x.T.flags.c_contiguous:
        # A transposed operand (an unfolded input's cols.T): copying it in its own memory
        # order and handing BLAS the transposed view avoids a strided gather.
        return _as_float(buffers, x.T, slot, dtype).T
    buf = _buffer(buffers, x.shape, slot, dtype)
    np.copyto(buf, x)
    return buf


def blas_product(a: np.ndarray, b: np.ndarray, unit: int | None = None) -> np.ndarray:
    """``a @ b`` through BLAS as int64; the caller has proven every partial sum below 2**53.

    ``unit`` bounds one product ``|a_ik * b_kj|`` (None: unknown). Slices of the shared
    dimension of at most ``(2**24 - 1) // unit`` terms keep every float32 partial sum exact:
    a product that fits one slice runs in float32, one that needs several runs slice by
    slice in float32, the slices summed in float64 (exact: the caller's bound), unless the
    slices would be too thin to pay off; anything else runs in float64.
    """
    buffers = workspace()
    k = a.shape[1]
    span = k + 1 if unit is None else (FLOAT32_EXACT - 1) // max(unit, 1)
    if unit is None or span < min(k, MIN_SPAN):
        out = _buffer(buffers, (a.shape[0], b.shape[1]), 2, np.float64)
        np.matmul(
            _as_float(buffers, a, 0, np.float64), _as_float(buffers, b, 1, np.float64), out=out
        )
        return out.astype(np.int64)
    a32, b32 = _as_float(buffers, a, 0, np.float32), _as_float(buffers, b, 1, np.float32)
    part = _buffer(buffers, (a.shape[0], b.shape[1]), 2, np.float32)
    if span >= k:
        np.matmul(a32, b32, out=part)
        return part.astype(np.int64)
    total = _buffer(buffers, part.shape, 3, np.float64)
    total.fill(0)
    for start in range(0, k, span):
        np.matmul(a32[:, start : start + span], b32[start : start + span], out=part)
        total += part
    return total.astype(np.int64)


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
    The limit is the BLAS library's own (process-wide); it changes speed, never results.
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
