"""The ``compiled`` engine's element-wise and folding kernels of the layered step
(``layer_ops.c``).

Under the ``compiled`` engine the layers (:mod:`pocketnn.nn.layers`) hand these the work
numpy would otherwise do in several passes over int64 temporaries: a convolution's
``fold`` (col2im) with its division by ``2**f``, the fixed-point division of a sum, a
tabulated activation's lookup, the division of an error by its slopes, max pooling both
ways, and the momentum optimizer's update of a parameter. Each takes only the dtypes and
layouts its C takes and returns None otherwise (the layer's numpy reference then runs);
each computes the reference's bits (``tests/test_layer_ops.py``). They run on the
calling thread.
"""

from __future__ import annotations

import ctypes

import numpy as np

from .build import library

CODES = {
    np.dtype(dtype): code
    for code, dtype in enumerate((np.int8, np.int16, np.int32, np.int64, np.uint8))
}
"""The element types ``layer_ops.c`` reads, by their code there."""
INT64 = np.dtype(np.int64)


class Strides4(ctypes.Structure):
    """The element strides of an ``(n, c, y, x)`` array, as ``layer_ops.c`` takes them."""

    _fields_ = [(axis, ctypes.c_int64) for axis in ("n", "c", "y", "x")]


def _strides(a: np.ndarray) -> Strides4 | None:
    size = a.dtype.itemsize
    if a.ndim != 4 or any(s % size for s in a.strides) or not a.flags.aligned:
        return None
    return Strides4(*(s // size for s in a.strides))


def _check(status: int, name: str) -> None:
    if status:
        raise RuntimeError(f"pnn_{name} refused its arguments ({status}): a bug in {__name__}")


def shift_div_(a: np.ndarray, shift: int) -> np.ndarray | None:
    """``a / 2**shift`` truncating, in place, for a contiguous int64 ``a``; None otherwise."""
    if a.dtype != INT64 or not (a.flags.c_contiguous or a.flags.f_contiguous):
        return None
    if not 0 <= shift <= 62 or not a.flags.writeable:
        return None
    _check(library().pnn_shift_div(a.ctypes.data, a.size, shift, a.ctypes.data), "shift_div")
    return a


def fold(
    cols: np.ndarray, shape: tuple[int, ...], k: int, stride: int, padding: int, shift: int
) -> np.ndarray | None:
    """col2im of int64 ``cols`` onto ``shape`` ``(N, C, H, W)``, then ``/ 2**shift``
    (truncating), as an ``(N, C, H, W)`` view of channels-last memory; None for operands
    the kernel does not take. The caller has bounded every sum within int64."""
    n, c, h, w = shape
    if cols.dtype != INT64 or not cols.flags.c_contiguous or not 0 <= shift <= 62:
        return None
    if cols.shape != (cols.shape[0], c * k * k):
        return None
    out = np.empty((n, h, w, c), dtype=np.int64)
    status = library().pnn_fold(
        cols.ctypes.data, n, c, h, w, k, stride, padding, shift, out.ctypes.data
    )
    _check(status, "fold")
    return out.transpose(0, 3, 1, 2)


def table(
    z: np.ndarray,
    shift: int,
    divisor: int,
    low: int,
    y_table: np.ndarray,
    g_table: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """For a 1-d contiguous int64 ``z``: ``x = clip(z / 2**shift / divisor, low, low +
    len(y_table) - 1)`` (truncating) and ``y_table[x - low]``, ``g_table[x - low]`` (g None
    when ``g_table`` is); None for what the kernel does not take."""
    if z.dtype != INT64 or z.ndim != 1 or not z.flags.c_contiguous or not 0 <= shift <= 62:
        return None
    tables = [t for t in (y_table, g_table) if t is not None]
    if divisor < 1 or any(t.ndim != 1 or not t.flags.c_contiguous for t in tables):
        return None
    y = np.empty(z.shape, dtype=y_table.dtype)
    g = None if g_table is None else np.empty(z.shape, dtype=g_table.dtype)
    status = library().pnn_table(
        z.ctypes.data, z.size, shift, divisor, low, low + y_table.size - 1,
        y_table.ctypes.data, y_table.itemsize,
        None if g is None else g_table.ctypes.data, 1 if g is None else g.itemsize,
        y.ctypes.data, None if g is None else g.ctypes.data,
    )  # fmt: skip
    _check(status, "table")
    return y, g


def divide(e: np.ndarray, g: np.ndarray) -> np.ndarray | None:
    """``e / g`` (truncating, int64) for 1-d contiguous int64 ``e`` and signed ``g`` of the
    same size; None for other operands, or if some ``g`` is not positive (the reference
    raises)."""
    code = CODES.get(g.dtype)
    if code is None or g.dtype.kind != "i" or e.dtype != INT64 or e.shape != g.shape:
        return None
    if e.ndim != 1 or not (e.flags.c_contiguous and g.flags.c_contiguous):
        return None
    out = np.empty(e.shape, dtype=np.int64)
    status = library().pnn_divide(e.ctypes.data, g.ctypes.data, code, e.size, out.ctypes.data)
    return out if status == 0 else None


def maxpool(
    a: np.ndarray, size: int, y: np.ndarray, where: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Max pooling of ``a`` ``(N, C, H, W)`` into the given ``y`` (``a``'s dtype) and
    ``where`` (uint8: each window's first maximum, row-major); None where the kernel does
    not take the operands (``y`` and ``where`` are then unwritten)."""
    code = CODES.get(a.dtype)
    sa, sy, sw = _strides(a), _strides(y), _strides(where)
    if code is None or None in (sa, sy, sw) or y.dtype != a.dtype or size * size > 256:
        return None
    if where.dtype != np.uint8:
        return None
    n, c, h, w = a.shape
    status = library().pnn_maxpool(
        a.ctypes.data, code, ctypes.byref(sa), n, c, h, w, size,
        y.ctypes.data, ctypes.byref(sy), where.ctypes.data, ctypes.byref(sw),
    )  # fmt: skip
    _check(status, "maxpool")
    return y, where


def maxpool_backward(
    delta: np.ndarray, where: np.ndarray, size: int, out: np.ndarray
) -> np.ndarray | None:
    """Max pooling's backward into ``out`` (int64, ``(N, C, H, W)``): each window's delta at
    its first maximum, zero elsewhere; None for operands the kernel does not take."""
    sd, sw, so = _strides(delta), _strides(where), _strides(out)
    if delta.dtype != INT64 or out.dtype != INT64 or where.dtype != np.uint8:
        return None
    if None in (sd, sw, so) or size * size > 256:
        return None
    n, c, h, w = out.shape
    status = library().pnn_maxpool_backward(
        delta.ctypes.data, ctypes.byref(sd), where.ctypes.data, ctypes.byref(sw),
        n, c, h, w, size, out.ctypes.data, ctypes.byref(so),
    )  # fmt: skip
    _check(status, "maxpool_backward")
    return out


def takes_momentum(velocity: np.ndarray, value: np.ndarray, param: np.ndarray) -> bool:
    """Whether :func:`momentum` takes these operands (asked before the draws are made)."""
    if param.dtype.kind != "i" or param.dtype.itemsize not in (2, 4):
        return False
    arrays = (velocity, value, param)
    if any(a.shape != param.shape or not a.flags.c_contiguous for a in arrays):
        return False
    return velocity.dtype == INT64 and value.dtype == INT64


def momentum(
    velocity: np.ndarray,
    value: np.ndarray,
    param: np.ndarray,
    draws: np.ndarray | None,
    shift: int,
    divisor: int,
    clamp: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The momentum step (:class:`~pocketnn.train.momentum.MomentumSGD`): the new velocity
    ``v - v / 2**shift + value`` and the new parameter values ``clamp(param - round(v' /
    divisor))`` (truncating, or stochastic with ``draws``), both int64 of ``param``'s
    shape, for operands :func:`takes_momentum` accepts. The caller has checked that the
    new velocity fits int64."""
    if not takes_momentum(velocity, value, param):
        raise ValueError("momentum: operands the kernel does not take")
    if draws is not None and (draws.dtype != INT64 or draws.shape != param.shape):
        raise ValueError("momentum: draws must be int64 of the parameter's shape")
    draws = None if draws is None else np.ascontiguousarray(draws)
    new_velocity = np.empty(param.shape, dtype=np.int64)
    new_param = np.empty(param.shape, dtype=np.int64)
    status = library().pnn_momentum(
        param.size, velocity.ctypes.data, value.ctypes.data, param.ctypes.data,
        CODES[param.dtype], None if draws is None else draws.ctypes.data, shift, divisor,
        clamp, new_velocity.ctypes.data, new_param.ctypes.data,
    )  # fmt: skip
    _check(status, "momentum")
    return new_velocity, new_param
