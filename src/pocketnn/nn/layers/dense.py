"""Fully connected layers with integer weights: ``z = a @ W + b``, then the activation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from ...core.arith import signed_dtype_for, trunc_div
from ...core.overflow import guard
from ...core.products import active_columns, exact_matmul, matmul
from ..activations import Activation, get_activation
from .base import Gradient, LayerConfig, check_parameter

WEIGHT_CLAMP = 32767
"""Weights and biases are clamped to [-WEIGHT_CLAMP, WEIGHT_CLAMP] after every update."""


def param_dtype(weight_clamp: int) -> np.dtype:
    """The dtype of clamped weights: int16, or int32 for a clamp beyond 16 bits."""
    dtype = signed_dtype_for(weight_clamp, smallest=np.int16)
    if dtype.itemsize > 4:
        raise ValueError(f"weight_clamp {weight_clamp} does not fit int32")
    return dtype


@dataclass(frozen=True)
class DenseConfig(LayerConfig):
    n_in: int
    n_out: int
    activation: str = "pocket_tanh"
    weight_clamp: int = WEIGHT_CLAMP
    frac_bits: int = 0
    bias: bool = True


def check_fixed_point(name: str, frac_bits: int, bias: bool) -> tuple[int, bool]:
    """Validate the fixed-point settings shared by the linear layers."""
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, (int, np.integer)):
        raise ValueError(f"{name}: frac_bits must be an integer, got {frac_bits!r}")
    if not 0 <= frac_bits <= 30:
        raise ValueError(f"{name}: frac_bits must lie in [0, 30], got {frac_bits}")
    if not isinstance(bias, (bool, np.bool_)):
        raise ValueError(f"{name}: bias must be true or false, got {bias!r}")
    return int(frac_bits), bool(bias)


def fixed_point_parameters(W: np.ndarray, b: np.ndarray, bias: bool) -> dict[str, np.ndarray]:
    """A linear layer's trainable parameters: a layer without bias trains ``W`` alone."""
    return {"W": W, "b": b} if bias else {"W": W}


class DenseCache(NamedTuple):
    """What the backward pass of a dense layer needs: its input and gradient inverse."""

    a: np.ndarray
    g: np.ndarray


class Dense:
    """A fully connected layer: ``z = a @ W + b``, then ``(y, g) = activation(z, n_in)``.

    Parameters
    ----------
    n_in, n_out : input and output widths
    activation : a name from :data:`pocketnn.nn.activations.ACTIVATIONS`
    name : used in error messages, e.g. ``"fc1"``
    weight_clamp : bound of |W| and |b| after every update (16-bit by default)
    frac_bits : 0 (the reference's layer), or ``f``: the weights are fixed-point numbers
        with ``f`` fractional bits, so the sum is divided by ``2**f`` (truncating) on the
        way forward and the error product ``delta @ W.T`` likewise on the way back (both
        exact in int64 before the division). The layer's output then keeps the scale of
        its input, and the optimizer's steps are the weights' own fine units.
    bias : False: no bias (``b`` stays zero and is not a parameter)

    Attributes
    ----------
    W : (n_in, n_out) integer array, zeros at construction
    b : (1, n_out) integer array, zeros at construction
    """

    type_name: ClassVar[str] = "Dense"

    def __init__(
        self,
        n_in: int,
        n_out: int,
        activation: str = "pocket_tanh",
        name: str = "fc",
        weight_clamp: int = WEIGHT_CLAMP,
        frac_bits: int = 0,
        bias: bool = True,
    ) -> None:
        if int(n_in) < 1 or int(n_out) < 1:
            raise ValueError(f"{name}: layer widths must be positive, got {n_in} -> {n_out}")
        if int(weight_clamp) < 1:
            raise ValueError(f"{name}: weight_clamp must be positive, got {weight_clamp}")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.activation: Activation = get_activation(activation)
        self.name = name
        self._clamp = int(weight_clamp)
        self.frac_bits, self.bias = check_fixed_point(name, frac_bits, bias)
        dtype = param_dtype(self._clamp)
        self.W = np.zeros((self.n_in, self.n_out), dtype=dtype)
        self.b = np.zeros((1, self.n_out), dtype=dtype)
        self._where = {
            op: f"{name}: {op}"
            for op in (
                "forward a @ W + b",
                "update a.T @ delta",
                "update colsum(delta)",
                "backward delta @ W.T",
            )
        }

    def __repr__(self) -> str:
        return (
            f"Dense({self.n_in}, {self.n_out}, activation={self.activation.name!r}, "
            f"name={self.name!r})"
        )

    @property
    def activation_name(self) -> str:
        return self.activation.name

    @property
    def weight_clamp(self) -> int:
        return self._clamp

    @property
    def config(self) -> DenseConfig:
        return DenseConfig(
            self.name,
            self.n_in,
            self.n_out,
            self.activation.name,
            self._clamp,
            self.frac_bits,
            self.bias,
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.n_in,)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.n_out,)

    def preactivation(self, a: np.ndarray) -> np.ndarray:
        """``z = a @ W + b`` (int64, int32-guarded) for an integer batch ``a``.

        A batch of raw unsigned data (pixels) is multiplied through its non-zero columns
        only (:func:`~pocketnn.core.products.active_columns`): the same integers, less work.
        """
        cols = active_columns(a) if a.dtype.kind == "u" else None
        a, W = (a, self.W) if cols is None else (a[:, cols], self.W[cols])
        where = self._where["forward a @ W + b"]
        if self.frac_bits:
            return trunc_div(exact_matmul(a, W, where)[0] + self.b, 1 << self.frac_bits)
        return matmul(a, W, self.b, where=where)

    def forward(self, a: np.ndarray) -> tuple[np.ndarray, DenseCache]:
        y, g = self.activation(self.preactivation(a), self.n_in)
        return y, DenseCache(a, g)

    def infer(self, a: np.ndarray) -> np.ndarray:
        return self.activation(self.preactivation(a), self.n_in)[0]

    def delta(self, error: np.ndarray, cache: DenseCache) -> np.ndarray:
        """``error / g``, truncating: the slope of the activation is ``1 / g``."""
        return trunc_div(error, cache.g)

    def backward(
        self,
        delta: np.ndarray,
        cache: DenseCache,
        params: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        W = self.W if params is None else params["W"]
        where = self._where["backward delta @ W.T"]
        if self.frac_bits:
            return trunc_div(exact_matmul(delta, W.T, where)[0], 1 << self.frac_bits)
        return matmul(delta, W.T, where=where)

    def weight_gradient(
        self, a_prev: np.ndarray, delta: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``a_prev.T @ delta`` on the rows of ``W`` that can change, and those rows.

        Rows whose input column is zero across the batch get an exactly zero gradient, so
        for raw unsigned input only the others are computed (rows None: all of them).
        """
        cols = active_columns(a_prev) if a_prev.dtype.kind == "u" else None
        a_t = (a_prev if cols is None else a_prev[:, cols]).T
        where = self._where["update a.T @ delta"]
        if self.frac_bits:  # fixed-point errors carry more bits: exact in int64
            return exact_matmul(a_t, delta, where)[0], cols
        return matmul(a_t, delta, where=where), cols

    def gradient(self, delta: np.ndarray, cache: DenseCache) -> list[Gradient]:
        grad_w, rows = self.weight_gradient(cache.a, delta)
        exact32 = not self.frac_bits
        grads = [Gradient("W", grad_w, rows, int32=exact32)]
        if self.bias:
            grad_b = delta.sum(axis=0, keepdims=True, dtype=np.int64)
            if exact32:
                grad_b = guard(grad_b, self._where["update colsum(delta)"])
            grads.append(Gradient("b", grad_b, int32=exact32))
        return grads

    def parameters(self) -> dict[str, np.ndarray]:
        return fixed_point_parameters(self.W, self.b, self.bias)

    def set_parameters(self, params: Mapping[str, np.ndarray]) -> None:
        """Replace the parameters, checking shape, integer dtype and the clamp range."""
        W = check_parameter(self.name, "W", params["W"], self.W.shape, self._clamp)
        b = np.asarray(params["b"] if self.bias or "b" in params else self.b)
        b = check_parameter(
            self.name, "b", b.reshape(1, -1) if b.ndim == 1 else b, self.b.shape, self._clamp
        )
        self.W = W.astype(self.W.dtype)
        self.b = b.astype(self.b.dtype)

    def set_params(self, W: np.ndarray, b: np.ndarray) -> None:
        """Shorthand for ``set_parameters({"W": W, "b": b})``."""
        self.set_parameters({"W": W, "b": b})
