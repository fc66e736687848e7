"""Element-wise work in the order an array's values lie in memory.

A convolution's output is an ``(N, C, H, W)`` view of channels-last memory (its product
gives one row of channels per position), and its backward pass wants the error back as
those rows. Copying to ``(N, C, H, W)`` order before each element-wise layer and back to
rows for the next product costs more than the layers' arithmetic, so the parameter-free
layers keep the layout they are given: these helpers flatten an array in memory order and
allocate new arrays in another array's axis order. Values never depend on the layout.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import DTypeLike


def axis_order(a: np.ndarray) -> list[int]:
    """``a``'s axes from the one with the largest stride to the smallest (C order: 0, 1, ...)."""
    return sorted(range(a.ndim), key=lambda axis: -abs(a.strides[axis]))


def flat_view(a: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """``a`` as a 1-d array in memory order (a view when ``a`` is a permuted contiguous
    array, else a C-order copy), and the function that gives a result computed on it back
    ``a``'s shape (a view in ``a``'s axis order)."""
    order = axis_order(a)
    permuted = a.transpose(order)
    if not permuted.flags.c_contiguous:
        order, permuted = list(range(a.ndim)), np.ascontiguousarray(a)
    back = np.argsort(order)
    shape = permuted.shape
    return permuted.reshape(-1), lambda r: r.reshape(shape).transpose(back)


def empty_in_layout(template: np.ndarray, shape: tuple[int, ...], dtype: DTypeLike) -> np.ndarray:
    """An uninitialised array of ``shape`` whose axes lie in memory in ``template``'s order
    (same number of axes)."""
    order = axis_order(template)
    return np.empty([shape[axis] for axis in order], dtype=dtype).transpose(np.argsort(order))
