"""Engines: interchangeable ways of computing the same integers.

``"int"`` (:mod:`.reference`)
    integer units only: numpy ``einsum`` in int32 over slices short enough that no partial
    sum can overflow, else int64. No floating-point instruction touches model values.
``"blas"`` (:mod:`.blas`)
    float64 BLAS, used only where a bound proves every partial sum is an integer below
    2**53 (so float64 holds it exactly whatever order BLAS adds in), float32 where a bound
    proves them below 2**24; elsewhere ``"int"``.
``"fused"`` (:mod:`.fused`, needs numba)
    ``"blas"`` products, plus a whole DFA training step in compiled integer kernels.
``"compiled"`` (:mod:`.compiled`, needs a C compiler once)
    whole DFA epochs and test passes in integer-only C; every other product in its
    integer-only C matrix product (int32 or int64 vector lanes, as the bound allows).

Which engine runs is part of the run context (:func:`pocketnn.core.context.configure`).
Every engine is checked against the others bit for bit by one conformance suite
(``tests/test_conformance.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..core.context import ENGINES, current


def accelerated_step() -> Callable[..., Any] | None:
    """The current engine's whole-step kernel (``None``: run the step layer by layer).

    The kernel takes ``(model, rule, optimizer, x, targets, lr_inv)`` and returns
    ``(loss, correct)``, or ``None`` for a configuration it does not cover.
    """
    engine = current().engine
    if engine == "compiled":
        from .compiled import train_step
    elif engine == "fused":
        from .fused import train_step  # imports numba: only when the engine is selected
    else:
        return None
    return train_step


def accelerated_epoch() -> Callable[..., Any] | None:
    """The current engine's whole-epoch kernel (``None``: run the epoch step by step).

    The kernel takes ``(model, rule, optimizer, x, targets, order, batch_size, lr_inv, rng,
    progress)`` and returns ``(loss, correct)``, or ``None`` for a configuration it does not
    cover.
    """
    if current().engine != "compiled":
        return None
    from .compiled import train_epoch

    return train_epoch


def accelerated_scores() -> Callable[..., Any] | None:
    """The current engine's whole test-pass kernel (``None``: layer by layer).

    The kernel takes ``(model, x, batch_size)`` and returns the class scores, or ``None``
    for a model or input it does not cover.
    """
    if current().engine != "compiled":
        return None
    from .compiled import scores

    return scores


__all__ = ["ENGINES", "accelerated_epoch", "accelerated_scores", "accelerated_step"]


def accelerated_ops() -> ModuleType | None:
    """The current engine's kernels of the layered step's element-wise work (fold,
    fixed-point divisions, activation tables, pooling, the momentum update), or ``None``:
    run the numpy reference. A kernel returns ``None`` for operands it does not take, and
    computes the reference's bits otherwise (``tests/test_layer_ops.py``)."""
    if current().engine != "compiled":
        return None
    from .compiled import layer_ops

    return layer_ops
