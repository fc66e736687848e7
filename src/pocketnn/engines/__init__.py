"""Engines: interchangeable ways of computing the same integers.

``"int"`` (:mod:`.reference`)
    integer units only: numpy ``einsum`` in int32 over slices short enough that no partial
    sum can overflow, else int64. No floating-point instruction touches model values.
``"blas"`` (:mod:`.blas`)
    float64 BLAS, used only where a bound proves every partial sum is an integer below
    2**53 (so float64 holds it exactly whatever order BLAS adds in); elsewhere ``"int"``.
``"fused"`` (:mod:`.fused`, needs numba)
    ``"blas"`` products, plus a whole DFA training step in compiled integer kernels.

Which engine runs is part of the run context (:func:`pocketnn.core.context.configure`).
Every engine is checked against the others bit for bit by one conformance suite
(``tests/test_conformance.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.context import ENGINES, current


def accelerated_step() -> Callable[..., Any] | None:
    """The current engine's whole-step kernel (``None``: run the step layer by layer).

    The kernel takes ``(model, rule, optimizer, x, targets, lr_inv)`` and returns
    ``(loss, correct)``, or ``None`` for a configuration it does not cover.
    """
    if current().engine != "fused":
        return None
    from .fused import train_step  # imports numba: only when the engine is selected

    return train_step


__all__ = ["ENGINES", "accelerated_step"]
