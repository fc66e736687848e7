"""The C structures the kernels take (``pnn_net``, ``pnn_run`` of ``kernels.c``), and the
checks that every int64 sum of a call is provably exact before the kernels may run it.

Every field is 8 bytes (int64 or a pointer), so the layouts match without padding rules.
Arrays are passed by address: the caller keeps them alive (and unmoved) during the call.
"""

from __future__ import annotations

import ctypes
from typing import NamedTuple

import numpy as np

from ...core.arith import INT32_MAX, INT64_MAX, dtype_magnitude
from ..dfa_plan import OUTPUT_BOUND, Plan, magic

MAX_LAYERS = 16
MAX_BATCH = 1 << 15
"""Batch rows up to this keep a gradient sum ``max|x| * 2**31 * rows`` within int64."""
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
X_CODES = {np.dtype(np.uint8): 0, np.dtype(np.int8): 1, np.dtype(np.uint16): 2}
X_CODES[np.dtype(np.int16)] = 3
"""Input dtypes the kernels read (the first layer's input), by their code in kernels.c."""


class Net(ctypes.Structure):
    """``pnn_net``: the model's shape, activation tables and parameter arrays."""

    _fields_ = [
        ("n_layers", _I64),
        ("n_classes", _I64),
        ("wrap", _I64),
        ("wide", _I64),
        ("dims", _I64 * (MAX_LAYERS + 1)),
        ("clamp", _I64 * MAX_LAYERS),
        ("spec", (_I64 * 5) * MAX_LAYERS),
        ("tables", _PTR),
        ("table_width", _I64),
        ("W", _PTR * MAX_LAYERS),
        ("b", _PTR * MAX_LAYERS),
        ("B", _PTR * MAX_LAYERS),
    ]


class Run(ctypes.Structure):
    """``pnn_run``: the samples, batches, learning rate and draws of a training call, and
    its results (summed loss, correct count, steps done, failing site and value, draws
    used)."""

    _fields_ = [
        ("x", _PTR),
        ("x_code", _I64),
        ("x_stride", _I64),
        ("x_max", _I64),
        ("skip_zero_rows", _I64),
        ("order", _PTR),
        ("targets", _PTR),
        ("n", _I64),
        ("batch", _I64),
        ("lr_inv", _I64),
        ("lr_m", _I64),
        ("lr_s", _I64),
        ("lr_edge", _I64),
        ("draws", _PTR),
        ("n_draws", _I64),
        ("threads", _I64),
        ("loss", _I64),
        ("correct", _I64),
        ("steps", _I64),
        ("site", _I64),
        ("worst", _I64),
        ("draws_used", _I64),
    ]


class Input(NamedTuple):
    """How the kernels read a 2-D input: dtype code, row stride in elements, largest |x|."""

    code: int
    stride: int
    magnitude: int


def input_of(x: np.ndarray) -> Input | None:
    """The kernels' view of ``x``, or None for input they do not read (other dtypes,
    dimensions or memory layouts)."""
    code = X_CODES.get(x.dtype)
    size = x.dtype.itemsize
    if code is None or x.ndim != 2 or x.strides[1] != size or x.strides[0] % size:
        return None
    if x.strides[0] < 0:
        return None
    return Input(code, x.strides[0] // size, dtype_magnitude(x.dtype))


def exact(model, x_magnitude: int, batch: int) -> bool:
    """Whether every int64 sum of a call on ``model`` is exact, for inputs up to
    ``x_magnitude`` in batches up to ``batch`` rows (the kernels use int32 offsets too)."""
    dims = model.dims
    w_mag = dtype_magnitude(model.layers[0].W.dtype)
    if len(model.layers) > MAX_LAYERS or batch > MAX_BATCH:
        return False
    if batch * max(dims) > INT32_MAX:
        return False
    forward = max(x_magnitude, OUTPUT_BOUND) * w_mag * max(dims) + w_mag
    gradient = max(x_magnitude, OUTPUT_BOUND) * (2 * 2**31) * batch
    return max(forward, gradient) <= INT64_MAX


def net_of(model, plan: Plan, wrap: bool, feedback=()) -> tuple[Net, list]:
    """The ``pnn_net`` of a model, and the arrays its pointers reach (keep them alive)."""
    net = Net()
    keep = [plan.tables]
    layers = model.layers
    net.n_layers, net.n_classes, net.wrap = len(layers), model.n_classes, int(wrap)
    net.wide = int(layers[0].W.dtype.itemsize > 2)
    net.dims[: len(layers) + 1] = model.dims
    net.clamp[: len(layers)] = [layer.weight_clamp for layer in layers]
    for i, spec in enumerate(plan.specs.tolist()):
        net.spec[i][:] = spec
    net.tables, net.table_width = plan.tables.ctypes.data, plan.tables.shape[2]
    for i, layer in enumerate(layers):
        net.W[i], net.b[i] = layer.W.ctypes.data, layer.b.ctypes.data
    for i, b in enumerate(feedback):
        net.B[i] = b.ctypes.data
        keep.append(b)
    return net, keep


def feedback_int32(feedback) -> list[np.ndarray] | None:
    """The DFA matrices as C-contiguous int32 (None if a value does not fit)."""
    out = []
    for b in feedback:
        if b.dtype != np.int32:
            if b.size and int(b.max()) > INT32_MAX:
                return None
            b = np.ascontiguousarray(b, dtype=np.int32)
        out.append(b)
    return out


def learning_rate(run: Run, lr_inv: int) -> None:
    """Set ``lr_inv`` and the magic numbers of its division."""
    run.lr_inv = lr_inv
    run.lr_m, run.lr_s, run.lr_edge = magic(lr_inv)
