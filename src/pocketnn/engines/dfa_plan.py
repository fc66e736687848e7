"""What a compiled DFA step needs to know about a model: coverage, tables, divisors, limits.

Shared by the engines that run whole DFA steps in compiled code (``fused``, ``compiled``):
which configurations they cover, the activation tables and the "magic" numbers that turn
every C division by a positive constant into a multiply and a shift, and the largest target
for which their int64 sums stay provably exact. Pure numpy: importing it loads no compiler.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from ..core.arith import INT32_EXACT, INT32_MAX, INT64_MAX, dtype_magnitude
from ..nn.activations import get_activation
from ..nn.layers import Dense
from ..train.optimizer import IntegerSGD
from ..train.rules import DFA

EDGE = INT32_EXACT
"""2**31: the one dividend magnitude (-2**31) outside the multiply-shift's proven range."""
MAX_WIDTH = 1 << 23
"""Layer widths and batch rows up to this keep every int64 sum provably exact."""
OPERATIONS = ("forward a @ W + b", "feedback e @ B", "update a.T @ delta", "update colsum(delta)")
"""The checks of a layer, in the layered step's order; a failing check is reported as the
site ``4 * layer + operation``."""
OUTPUT_BOUND = 127
"""The largest ``|y|`` of a covered activation; the int64 bounds rely on it."""


def magic(d: int) -> tuple[int, int, int]:
    """``(m, s, edge)`` such that ``tdiv`` divides by ``d`` (``1 <= d <= 2**31``).

    With ``l = ceil(log2 d)``, ``s = 31 + l`` and ``m = ceil(2**s / d)``, the error
    ``m * d - 2**s`` is below ``d <= 2**l``, which by Granlund & Montgomery (1994,
    theorem 4.2, N = 31) gives ``floor(n * m / 2**s) == floor(n / d)`` for every
    ``0 <= n < 2**31``; ``m <= 2**32``, so ``n * m < 2**63`` fits int64. ``edge`` is the
    quotient of the remaining magnitude ``2**31``. ``tdiv(n)`` is then
    ``sign(n) * (edge if |n| == 2**31 else (|n| * m) >> s)``: C's truncating ``n / d``.
    """
    if not 1 <= d <= EDGE:
        raise ValueError(f"magic: divisor must lie in [1, 2**31], got {d}")
    s = 31 + (d - 1).bit_length()
    return -(-(1 << s) // d), s, EDGE // d


class Plan(NamedTuple):
    """What the kernels need to know about a model, computed once per configuration.

    ``specs`` (L, 5): per layer the pre-scaling divisor's magic and the table's index range
    ``(m, s, edge, low, high)``; ``tables`` (L, 4, T): per layer the outputs and the magic of
    the gradient inverses; ``clamps`` (L,): the weight clamps.
    """

    specs: np.ndarray
    tables: np.ndarray
    clamps: np.ndarray


@functools.lru_cache(maxsize=32)
def layer_tables(layer_keys: tuple) -> Plan | None:
    """The kernels' tables for layers given as ``(activation name, n_in, clamp)``; None when
    an activation has no table or outputs beyond :data:`OUTPUT_BOUND`."""
    tables_of = [get_activation(name).table for name, _, _ in layer_keys]
    if any(t is None or int(np.abs(t.y).max()) > OUTPUT_BOUND for t in tables_of):
        return None
    width = max(len(t.y) for t in tables_of)
    specs = np.zeros((len(layer_keys), 5), dtype=np.int64)
    tables = np.ones((len(layer_keys), 4, width), dtype=np.int64)
    for i, (table, (_, n_in, _)) in enumerate(zip(tables_of, layer_keys)):
        specs[i] = (*magic(table.divisor(n_in)), table.low, table.high)
        tables[i, 0, : len(table.y)] = table.y
        tables[i, 1:, : len(table.g)] = np.array([magic(int(g)) for g in table.g]).T
    return Plan(specs, tables, np.array([key[2] for key in layer_keys], dtype=np.int64))


def model_plan(model) -> Plan | None:
    """The tables of a model the kernels cover, or None where the layered path must run.

    Covered: :class:`~pocketnn.nn.layers.Dense` layers (with bias, not fixed-point) whose
    activations have a table with outputs of at most :data:`OUTPUT_BOUND`, one parameter
    dtype of at most 32 bits (C-contiguous arrays) and widths up to :data:`MAX_WIDTH`.
    """
    layers = model.layers
    if not all(type(layer) is Dense for layer in layers):
        return None
    if any(layer.frac_bits or not layer.bias for layer in layers):  # fixed-point layers
        return None
    params = [p for layer in layers for p in (layer.W, layer.b)]
    if len({p.dtype for p in params}) != 1 or not all(p.flags.c_contiguous for p in params):
        return None
    if max(model.dims) > MAX_WIDTH:
        return None
    return layer_tables(
        tuple((layer.activation.name, layer.n_in, layer.weight_clamp) for layer in layers)
    )


def dfa_plan(model, rule, optimizer, lr_inv: int) -> Plan | None:
    """The tables of a covered DFA configuration, or None where the layered step must run.

    Covered: the :class:`~pocketnn.train.rules.DFA` rule with the plain
    :class:`~pocketnn.train.optimizer.IntegerSGD` (no weight decay, no ``grad_bits``) and
    ``lr_inv <= INT32_MAX``, on a model :func:`model_plan` covers with two or more layers, and one
    feedback dtype of at most 32 bits; together with the tables' bound of
    :data:`OUTPUT_BOUND` these keep every int64 sum exact and every divisor within
    :func:`magic`'s range. The caller checks its input.
    """
    if type(rule) is not DFA or type(optimizer) is not IntegerSGD:
        return None
    if optimizer.decay_inv or optimizer.grad_bits:
        return None
    if len(model.layers) < 2 or lr_inv > INT32_MAX:
        return None
    feedback = rule.feedback
    if len({b.dtype for b in feedback}) != 1 or not all(b.flags.c_contiguous for b in feedback):
        return None
    if feedback[0].dtype.itemsize > 4 or feedback[0].dtype.kind not in "iu":
        return None
    return model_plan(model)


def target_limit(feedback, n_classes: int, batch: int) -> int:
    """Largest ``|target|`` for which ``e @ B`` and the summed loss provably stay in int64.

    With outputs of at most 127, ``|e| <= |target| + 127``: ``e @ B`` needs
    ``|e| * max|B| * n_classes < 2**63``, the loss ``batch * n_classes * e**2 / 2 < 2**63``,
    and ``|e| < 2**31``.
    """
    unit = dtype_magnitude(feedback[0].dtype) * n_classes
    loss_limit = math.isqrt(2 * INT64_MAX // (batch * n_classes))
    return min(INT32_MAX, INT64_MAX // unit, loss_limit) - OUTPUT_BOUND
