"""Fully connected layers with integer weights."""

from __future__ import annotations

import numpy as np

from .activations import get_activation
from .intmath import (
    INT32_EXACT,
    INT32_MAX,
    active_columns,
    clamp,
    guard,
    matmul,
    signed_dtype_for,
    stochastic_div_,
    trunc_div_scalar_,
)

WEIGHT_CLAMP = 32767
"""Weights and biases are clamped to [-WEIGHT_CLAMP, WEIGHT_CLAMP] after every update."""


def param_dtype(weight_clamp: int) -> np.dtype:
    """The dtype of clamped weights: int16, or int32 for a clamp beyond 16 bits."""
    dtype = signed_dtype_for(weight_clamp, smallest=np.int16)
    if dtype.itemsize > 4:
        raise ValueError(f"weight_clamp {weight_clamp} does not fit int32")
    return dtype


class Dense:
    """A fully connected layer: ``z = a @ W + b``, then ``(y, g) = activation(z, n_in)``.

    Parameters
    ----------
    n_in, n_out : input and output widths
    activation : a name from :data:`pocketnn.activations.ACTIVATIONS`
    name : used in error messages, e.g. ``"fc1"``
    weight_clamp : bound of |W| and |b| after every update (16-bit by default)

    Attributes
    ----------
    W : (n_in, n_out) integer array, zeros at construction
    b : (1, n_out) integer array, zeros at construction
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        activation: str = "pocket_tanh",
        name: str = "fc",
        weight_clamp: int = WEIGHT_CLAMP,
    ) -> None:
        if int(n_in) < 1 or int(n_out) < 1:
            raise ValueError(f"{name}: layer widths must be positive, got {n_in} -> {n_out}")
        if int(weight_clamp) < 1:
            raise ValueError(f"{name}: weight_clamp must be positive, got {weight_clamp}")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.activation_name = activation
        self.activation = get_activation(activation)
        self.name = name
        self.weight_clamp = int(weight_clamp)
        dtype = param_dtype(self.weight_clamp)
        self.W = np.zeros((self.n_in, self.n_out), dtype=dtype)
        self.b = np.zeros((1, self.n_out), dtype=dtype)
        self._where = {
            op: f"{name}: {op}"
            for op in ("forward a @ W + b", "update a.T @ delta", "update colsum(delta)")
        }

    def __repr__(self) -> str:
        return (
            f"Dense({self.n_in}, {self.n_out}, activation={self.activation_name!r}, "
            f"name={self.name!r})"
        )

    def preactivation(self, a: np.ndarray) -> np.ndarray:
        """``z = a @ W + b`` (int64, int32-guarded) for an integer batch ``a``.

        A batch of raw unsigned data (pixels) is multiplied through its non-zero columns
        only (:func:`~pocketnn.intmath.active_columns`): the same integers, less work.
        """
        cols = active_columns(a) if a.dtype.kind == "u" else None
        a, W = (a, self.W) if cols is None else (a[:, cols], self.W[cols])
        return matmul(a, W, self.b, where=self._where["forward a @ W + b"])

    def forward(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the output ``y`` and gradient-inverse ``g`` for an integer batch ``a``."""
        return self.activation(self.preactivation(a), self.n_in)

    def weight_gradient(
        self, a_prev: np.ndarray, delta: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``a_prev.T @ delta`` on the rows of ``W`` that can change, and those rows.

        Rows whose input column is zero across the batch get an exactly zero gradient, so
        for raw unsigned input only the others are computed (rows None: all of them).
        """
        cols = active_columns(a_prev) if a_prev.dtype.kind == "u" else None
        a_t = (a_prev if cols is None else a_prev[:, cols]).T
        return matmul(a_t, delta, where=self._where["update a.T @ delta"]), cols

    def set_params(self, W: np.ndarray, b: np.ndarray) -> None:
        """Replace the parameters, checking shape, integer dtype and the clamp range."""
        W, b = np.asarray(W), np.asarray(b).reshape(1, -1)
        for label, x, shape in (("W", W, self.W.shape), ("b", b, self.b.shape)):
            if x.dtype.kind not in "iu":
                raise TypeError(f"{self.name}.{label}: expected integers, got dtype {x.dtype}")
            if x.shape != shape:
                raise ValueError(f"{self.name}.{label}: expected shape {shape}, got {x.shape}")
            if x.size and int(np.abs(x.astype(np.int64)).max()) > self.weight_clamp:
                raise ValueError(f"{self.name}.{label}: values exceed ±{self.weight_clamp}")
        self.W = W.astype(self.W.dtype)
        self.b = b.astype(self.b.dtype)

    def update(
        self,
        a_prev: np.ndarray,
        delta: np.ndarray,
        lr_inv: int,
        rng: np.random.Generator | None = None,
    ) -> None:
        """Apply ``W += (a_prev.T @ delta) / -lr_inv`` and ``b += colsum(delta) / -lr_inv``.

        One truncating division of the batch-summed product, then a clamp, as the reference.
        With ``rng``, the division rounds stochastically instead (unbiased; see
        :func:`~pocketnn.intmath.stochastic_div_`). Only the rows of ``W`` that can change
        are computed and written (:meth:`weight_gradient`).
        """
        grad_w, cols = self.weight_gradient(a_prev, delta)
        grad_b = guard(delta.sum(axis=0, keepdims=True), self._where["update colsum(delta)"])
        self._descend(self.W, grad_w, lr_inv, cols, rng)
        self._descend(self.b, grad_b, lr_inv, None, rng)

    def update_dtype(self, lr_inv: int) -> type:
        """The integer type the update runs in: int32 when its bounds allow, else int64.

        The guarded gradient fits int32, so ``|param - round(grad / lr_inv)|`` is at most
        ``weight_clamp + 2**31 / lr_inv + 1``; when that fits int32 too, so does every step.
        """
        narrow = lr_inv <= INT32_MAX and self.weight_clamp + INT32_EXACT // lr_inv + 1 <= INT32_MAX
        return np.int32 if narrow else np.int64

    def _descend(
        self,
        param: np.ndarray,
        grad: np.ndarray,
        lr_inv: int,
        rows: np.ndarray | None,
        rng: np.random.Generator | None,
    ) -> None:
        """``param[rows] = clamp(param[rows] - round(grad / lr_inv))``, truncating without rng.

        ``grad`` has passed the int32 guard, so when ``lr_inv`` and ``clamp + 2**31 / lr_inv + 1``
        fit int32 as well the whole update runs in int32 (half the memory traffic), exactly.
        """
        dtype = self.update_dtype(lr_inv)
        step = grad.astype(dtype) if dtype != grad.dtype else grad
        if rng is None:
            trunc_div_scalar_(step, lr_inv)
        else:
            stochastic_div_(step, lr_inv, rng)
        np.subtract(param if rows is None else param[rows], step, out=step)
        clamp(step, -self.weight_clamp, self.weight_clamp)
        if rows is None:
            param[...] = step
        else:
            param[rows] = step
