"""Two-dimensional convolution with integer weights, as exact products over unfolded patches.

``a`` of shape ``(N, C, H, W)`` is unfolded into one row per output position
(``im2col``: ``(N * Ho * Wo, C * k * k)``, zero padding), so the convolution is the same exact
integer product a dense layer uses, on any engine: ``z = cols @ W + b``. Rows are processed
in chunks so the float64 work buffers of the ``blas`` engine stay small (the ``compiled``
engine's product needs none: one call takes every row). Under ``compiled`` the fold and
the fixed-point divisions run in its C kernels (:func:`~pocketnn.engines.accelerated_ops`),
with the same bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from ...core.arith import INT64_MAX, trunc_div
from ...core.overflow import IntegerOverflowError
from ...core.products import exact_matmul, matmul
from ...engines import accelerated_ops
from .base import Gradient, LayerConfig, check_parameter
from .dense import WEIGHT_CLAMP, check_fixed_point, fixed_point_parameters, param_dtype

CHUNK_ROWS = 8192
"""Unfolded rows per product: bounds the work buffers (8192 x 576 float64 = 38 MB)."""


def _out_size(size: int, k: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - k) // stride + 1


def unfold(a: np.ndarray, k: int, stride: int, padding: int) -> np.ndarray:
    """``im2col``: ``(N, C, H, W)`` -> ``(N * Ho * Wo, C * k * k)``, rows in (n, y, x) order,
    columns in (c, ky, kx) order, in ``a``'s dtype."""
    n, c, h, w = a.shape
    ho, wo = _out_size(h, k, stride, padding), _out_size(w, k, stride, padding)
    # Channels last, so each kernel offset below copies runs of C contiguous values: a
    # numpy copy of the 6-d window view walks runs of k values and is several times slower.
    src = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=a.dtype)
    src[:, padding : padding + h, padding : padding + w] = a.transpose(0, 2, 3, 1)
    cols = np.empty((n, ho, wo, c, k, k), dtype=a.dtype)
    for ky in range(k):
        for kx in range(k):
            cols[..., ky, kx] = src[
                :, ky : ky + stride * ho : stride, kx : kx + stride * wo : stride
            ]
    return cols.reshape(n * ho * wo, c * k * k)


def fold(
    cols: np.ndarray, shape: tuple[int, ...], k: int, stride: int, padding: int, shift: int = 0
) -> np.ndarray:
    """The adjoint of :func:`unfold`: sum every patch entry back onto its input position,
    then divide by ``2**shift`` (truncating); an ``(N, C, H, W)`` view of channels-last
    memory. The caller has bounded every sum within int64 (:func:`fold_fits`)."""
    ops = accelerated_ops()
    if ops is not None:
        out = ops.fold(cols, shape, k, stride, padding, shift)
        if out is not None:
            return out
    n, c, h, w = shape
    ho, wo = _out_size(h, k, stride, padding), _out_size(w, k, stride, padding)
    # One transposing copy to (n, ky*kx, y, x, c) makes every kernel offset's block, and its
    # target in a channels-last output, runs of Wo * C contiguous values (at stride 1):
    # numpy adds those at memory speed, where runs of C values strided by k * k cost a
    # loop call each.
    patches = np.ascontiguousarray(cols.reshape(n, ho, wo, c, k * k).transpose(0, 4, 1, 2, 3))
    out = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=cols.dtype)
    for ky in range(k):
        for kx in range(k):
            out[:, ky : ky + stride * ho : stride, kx : kx + stride * wo : stride] += patches[
                :, ky * k + kx
            ]
    out = out[:, padding : padding + h, padding : padding + w].transpose(0, 3, 1, 2)
    return trunc_div(out, 1 << shift) if shift else out


def fold_fits(bound: int, k: int, stride: int) -> bool:
    """Whether :func:`fold` of products bounded by ``bound`` fits int64: at most
    ``ceil(k / stride)**2`` of them meet at an input position."""
    per_axis = -(-k // stride)
    return bound * per_axis * per_axis <= INT64_MAX


def divide_fixed_point(z: np.ndarray, frac_bits: int) -> np.ndarray:
    """``z / 2**frac_bits`` (truncating): in place where the engine's kernel takes ``z``."""
    ops = accelerated_ops()
    if ops is not None and ops.shift_div_(z, frac_bits) is not None:
        return z
    return trunc_div(z, 1 << frac_bits)


def row_chunk() -> int:
    """Unfolded rows per product: all of them under ``compiled`` (no float buffers)."""
    return CHUNK_ROWS if accelerated_ops() is None else INT64_MAX


@dataclass(frozen=True)
class Conv2DConfig(LayerConfig):
    in_channels: int
    out_channels: int
    kernel: int
    height: int
    width: int
    stride: int = 1
    padding: int = 0
    weight_clamp: int = WEIGHT_CLAMP
    frac_bits: int = 0
    bias: bool = True


class ConvCache(NamedTuple):
    cols: np.ndarray  # the unfolded input, in the input's (small) dtype
    batch: int


class Conv2D:
    """``z[n, o, y, x] = sum_{c, ky, kx} a[n, c, y*s + ky - p, x*s + kx - p] * W[c, ky, kx, o]
    + b[o]``, zero padding, no activation (follow it with :class:`Scale` and
    :class:`Activation`), or, with ``frac_bits`` f > 0, fixed-point weights: the sum and the
    error product are divided by ``2**f`` as in :class:`~pocketnn.nn.layers.Dense`.

    ``W`` is stored as a ``(in_channels * kernel * kernel, out_channels)`` matrix, rows in
    (c, ky, kx) order; ``b`` as ``(1, out_channels)``. The input's spatial size is part of
    the configuration, so shapes are checked when the model is built.
    """

    type_name: ClassVar[str] = "Conv2D"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        height: int,
        width: int,
        stride: int = 1,
        padding: int = 0,
        name: str = "conv",
        weight_clamp: int = WEIGHT_CLAMP,
        frac_bits: int = 0,
        bias: bool = True,
    ) -> None:
        frac_bits, bias = check_fixed_point(name, frac_bits, bias)
        for label, value, low in (
            ("in_channels", in_channels, 1),
            ("out_channels", out_channels, 1),
            ("kernel", kernel, 1),
            ("height", height, 1),
            ("width", width, 1),
            ("stride", stride, 1),
            ("padding", padding, 0),
            ("weight_clamp", weight_clamp, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name}: {label} must be an integer >= {low}, got {value!r}")
        if kernel > height + 2 * padding or kernel > width + 2 * padding:
            raise ValueError(
                f"{name}: kernel {kernel} is larger than its input {height}x{width} "
                f"with padding {padding}"
            )
        self.name = name
        self._cfg = Conv2DConfig(
            name,
            int(in_channels),
            int(out_channels),
            int(kernel),
            int(height),
            int(width),
            int(stride),
            int(padding),
            int(weight_clamp),
            frac_bits,
            bias,
        )
        c = self._cfg
        self.out_height = (c.height + 2 * c.padding - c.kernel) // c.stride + 1
        self.out_width = (c.width + 2 * c.padding - c.kernel) // c.stride + 1
        self.fan_in = c.in_channels * c.kernel * c.kernel
        dtype = param_dtype(c.weight_clamp)
        self.W = np.zeros((self.fan_in, c.out_channels), dtype=dtype)
        self.b = np.zeros((1, c.out_channels), dtype=dtype)
        self._where = {
            op: f"{name}: {op}"
            for op in ("forward cols @ W + b", "update cols.T @ delta", "backward delta @ W.T")
        }

    def __repr__(self) -> str:
        c = self._cfg
        return (
            f"Conv2D({c.in_channels}->{c.out_channels}, k{c.kernel} s{c.stride} "
            f"p{c.padding}, name={self.name!r})"
        )

    @property
    def fans(self) -> tuple[int, int]:
        """Inputs and outputs of one kernel application, for initialisation."""
        k2 = self._cfg.kernel**2
        return self._cfg.in_channels * k2, self._cfg.out_channels * k2

    @property
    def config(self) -> Conv2DConfig:
        return self._cfg

    @property
    def weight_clamp(self) -> int:
        return self._cfg.weight_clamp

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self._cfg.in_channels, self._cfg.height, self._cfg.width)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self._cfg.out_channels, self.out_height, self.out_width)

    def _products(self, cols: np.ndarray, batch: int) -> np.ndarray:
        # a layer without bias adds nothing: its zero b would only cost a pass
        bias, where = (self.b if self._cfg.bias else None), self._where["forward cols @ W + b"]
        chunk = row_chunk()
        if cols.shape[0] <= chunk:
            z = matmul(cols, self.W, bias, where=where)
        else:
            z = np.empty((cols.shape[0], self._cfg.out_channels), dtype=np.int64)
            for start in range(0, cols.shape[0], chunk):
                part = slice(start, start + chunk)
                z[part] = matmul(cols[part], self.W, bias, where=where)
        if self._cfg.frac_bits:
            z = divide_fixed_point(z, self._cfg.frac_bits)
        return z.reshape(batch, self.out_height, self.out_width, -1).transpose(0, 3, 1, 2)

    def forward(self, a: np.ndarray) -> tuple[np.ndarray, ConvCache]:
        c = self._cfg
        cols = unfold(a, c.kernel, c.stride, c.padding)
        return self._products(cols, a.shape[0]), ConvCache(cols, a.shape[0])

    def infer(self, a: np.ndarray) -> np.ndarray:
        c = self._cfg
        return self._products(unfold(a, c.kernel, c.stride, c.padding), a.shape[0])

    def delta(self, error: np.ndarray, cache: ConvCache) -> np.ndarray:
        """No activation: the delta at the sum is the error itself."""
        return error

    @staticmethod
    def _rows(delta: np.ndarray) -> np.ndarray:
        """``(N, O, Ho, Wo)`` -> ``(N * Ho * Wo, O)``, the layout of the unfolded rows."""
        return delta.transpose(0, 2, 3, 1).reshape(-1, delta.shape[1])

    def backward(
        self,
        delta: np.ndarray,
        cache: ConvCache,
        params: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """The error at the input: ``fold(delta @ W.T)``, exact in int64 (refused beyond)."""
        c = self._cfg
        W = self.W if params is None else params["W"]
        rows = self._rows(delta)
        where, chunk = self._where["backward delta @ W.T"], row_chunk()
        if rows.shape[0] <= chunk:
            cols, bound = exact_matmul(rows, W.T, where)
        else:
            cols, bound = np.empty((rows.shape[0], self.fan_in), dtype=np.int64), 0
            for start in range(0, rows.shape[0], chunk):
                part = slice(start, start + chunk)
                cols[part], part_bound = exact_matmul(rows[part], W.T, where)
                bound = max(bound, part_bound)
        if not fold_fits(bound, c.kernel, c.stride):
            raise IntegerOverflowError(f"{where}: the folded error sums could overflow int64")
        shape = (cache.batch, c.in_channels, c.height, c.width)
        return fold(cols, shape, c.kernel, c.stride, c.padding, c.frac_bits)

    def gradient(self, delta: np.ndarray, cache: ConvCache) -> list[Gradient]:
        """``cols.T @ delta`` and ``colsum(delta)``, summed over the batch and every output
        position: exact int64 sums (a bound check refuses them beyond int64). Without
        ``frac_bits`` the optimizer divides by ``lr_inv`` times the number of positions; a
        fixed-point layer's gradient is the plain sum, as backprop defines it."""
        rows = self._rows(delta)
        where, chunk = self._where["update cols.T @ delta"], row_chunk()
        if rows.shape[0] <= chunk:
            grad_w = exact_matmul(cache.cols.T, rows, where)[0]
        else:
            grad_w = np.zeros(self.W.shape, dtype=np.int64)
            for start in range(0, rows.shape[0], chunk):
                part = slice(start, start + chunk)
                grad_w += exact_matmul(cache.cols[part].T, rows[part], where)[0]
        scale = 1 if self._cfg.frac_bits else self.out_height * self.out_width
        grads = [Gradient("W", grad_w, None, scale, int32=False)]
        if self._cfg.bias:
            grad_b = rows.sum(axis=0, keepdims=True, dtype=np.int64)
            grads.append(Gradient("b", grad_b, None, scale, int32=False))
        return grads

    def parameters(self) -> dict[str, np.ndarray]:
        return fixed_point_parameters(self.W, self.b, self._cfg.bias)

    def set_parameters(self, params: Mapping[str, np.ndarray]) -> None:
        clamp = self._cfg.weight_clamp
        W = check_parameter(self.name, "W", params["W"], self.W.shape, clamp)
        b = np.asarray(params["b"] if self._cfg.bias or "b" in params else self.b)
        b = check_parameter(
            self.name, "b", b.reshape(1, -1) if b.ndim == 1 else b, self.b.shape, clamp
        )
        self.W = W.astype(self.W.dtype)
        self.b = b.astype(self.b.dtype)
