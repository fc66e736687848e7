"""The activations in C: which ones the exporter supports, and their C definitions.

Everything the C needs about an activation (its proven output bound and largest gradient
inverse, its C function, its call and any per-layer macro) lives in the activation object
itself (:class:`pocketnn.nn.activations.Activation`), next to the Python function it must
match bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...nn.activations import ACTIVATIONS as ALL_ACTIVATIONS
from ...nn.activations import Activation
from .settings import ExportError

ACTIVATIONS = {name: a for name, a in ALL_ACTIVATIONS.items() if a.c_source is not None}
"""The activations export-c supports. pocket_softmax normalises a whole row, which the
element-wise C layer loop does not do; it is refused with a clear error."""


def exportable(layer_name: str, activation: Activation) -> Activation:
    """``activation`` if the exporter can emit it, else an :class:`ExportError` naming the layer."""
    if activation.name not in ACTIVATIONS:
        raise ExportError(
            f"{layer_name}: activation {activation.name!r} is not supported by "
            f"export-c; supported: {', '.join(ACTIVATIONS)}"
        )
    return activation


def activation_c_functions(names: Sequence[str]) -> str:
    """C definitions of the activations in ``names`` (each returns y and stores g).

    Every function takes an int32 ``z`` (Python guards ``z`` to int32 before activating)
    and a pointer for the gradient inverse.
    """
    return "\n\n".join(ACTIVATIONS[n].c_source for n in dict.fromkeys(names) if n in ACTIVATIONS)
