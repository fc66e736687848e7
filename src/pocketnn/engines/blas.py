"""The BLAS product: float64 matrix multiply where a bound proves it exact.

The caller (:func:`pocketnn.core.products.exact_matmul`) has proven that every partial sum
is an integer below 2**53 in magnitude, so float64 represents each one exactly and the
result is the same integers whatever order BLAS adds in.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

import numpy as np

from ..core.context import workspace


def _buffer(buffers: dict[int, np.ndarray], shape: tuple[int, ...], slot: int) -> np.ndarray:
    """A reused float64 array of ``shape`` from this thread's ``buffers``.

    One flat buffer per slot, grown to the largest size seen and viewed at ``shape``, so
    batches of varying width reuse the same memory.
    """
    size = math.prod(shape)
    buf = buffers.get(slot)
    if buf is None or buf.size < size:
        buf = buffers[slot] = np.empty(size, dtype=np.float64)
    return buf[:size].reshape(shape)


def _as_float64(buffers: dict[int, np.ndarray], x: np.ndarray, slot: int) -> np.ndarray:
    buf = _buffer(buffers, x.shape, slot)
    np.copyto(buf, x)
    return buf


def blas_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` through float64 BLAS as int64; the caller has proven it exact (< 2**53)."""
    buffers = workspace()
    out = _buffer(buffers, (a.shape[0], b.shape[1]), 2)
    np.matmul(_as_float64(buffers, a, 0), _as_float64(buffers, b, 1), out=out)
    return out.astype(np.int64)


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
