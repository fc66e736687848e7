"""The pocket activation family: piecewise-linear, integer in and integer out.

Each activation is one :class:`~pocketnn.nn.activations.base.Activation` object carrying its
integer function, its output bound, its largest gradient inverse, its table where it has
one (for the fused engine) and its C code (for the exporter). To add one, define the object
in a module here and list it in :data:`ACTIVATIONS`.
"""

from __future__ import annotations

from types import MappingProxyType

from .base import Activation, Table
from .linear import AS_IS, POCKET_SOFTMAX, RESCALE
from .piecewise import K_BIT, POCKET_SIGMOID, POCKET_TANH, TANH_PIECES, Piece, tanh_divisor
from .rectifiers import LEAKY_RELU, LEAKY_RELU8, PLU, POCKET_LEAKYRELU, POCKET_RELU8BIT

ACTIVATIONS = MappingProxyType(
    {
        a.name: a
        for a in (
            POCKET_TANH,
            POCKET_SIGMOID,
            POCKET_RELU8BIT,
            POCKET_LEAKYRELU,
            LEAKY_RELU8,
            LEAKY_RELU,
            PLU,
            POCKET_SOFTMAX,
            RESCALE,
            AS_IS,
        )
    }
)


def get_activation(name: str) -> Activation:
    """Look an activation up by name; an unknown name lists the valid ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None


__all__ = [
    "ACTIVATIONS",
    "K_BIT",
    "TANH_PIECES",
    "Activation",
    "Piece",
    "Table",
    "get_activation",
    "tanh_divisor",
]
