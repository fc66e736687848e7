"""The activations in C: one table from activation name to everything the generated C needs.

For each supported activation, :data:`ACTIVATIONS` holds its proven output bound and largest
gradient inverse (for the planner), the C function that computes it, the call of that
function, and any per-layer macro the call needs. The piece tables of the pocket tanh and
sigmoid come from :mod:`pocketnn.activations`, so the C computes what Python computes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...activations import K_BIT, SIGMOID_PIECES, TABLE_HIGH, TABLE_LOW, TANH_PIECES, Piece
from .ctext import INT32_MAX, INT32_MIN

_PRESCALE = f"(1 << {K_BIT})"


def _no_layer_macros(layer: str, n_in: int) -> list[str]:
    return []


@dataclass(frozen=True)
class ActivationSpec:
    """What the generator needs to know about an activation.

    Attributes
    ----------
    out_bound : the largest ``|y|`` it can return for an int32 ``z``
    g_max : its largest gradient inverse (all are >= 1)
    c_call : the C call, with ``{z}``, ``{g}`` and ``{layer}`` placeholders (``{layer}``:
        the layer's upper-case C name, which prefixes the macros of ``layer_macros``)
    c_definition : the C function the call calls
    layer_macros : ``(layer, n_in) ->`` the ``#define`` lines the call needs in a layer
    """

    out_bound: int
    g_max: int
    c_call: str
    c_definition: str
    layer_macros: Callable[[str, int], list[str]] = _no_layer_macros


def _piece_expression(p: Piece) -> str:
    """``x * mul / div + add`` in C, simplified (C's ``/`` truncates like trunc_div)."""
    if p.mul == 0:
        return str(p.add)
    term = "x" if p.mul == 1 else f"{p.mul} * x"
    if p.div != 1:
        term = f"{term} / {p.div}"
    if p.add:
        term += f" {'+' if p.add > 0 else '-'} {abs(p.add)}"
    return term


def _piecewise_c(name: str, doc: str, pieces: Sequence[Piece], signature: str, x: str) -> str:
    lines = [
        f"/* {doc} */",
        f"static int32_t {name}({signature})",
        "{",
        f"    int32_t x = {x};",
        f"    if (x < {TABLE_LOW}) x = {TABLE_LOW};  /* the table's range; outside it is flat */",
        f"    if (x > {TABLE_HIGH}) x = {TABLE_HIGH};",
    ]
    for p in pieces[:-1]:
        lines.append(f"    if (x < {p.upper}) {{ *g = {p.g}; return {_piece_expression(p)}; }}")
    last = pieces[-1]
    lines += [f"    *g = {last.g};", f"    return {_piece_expression(last)};", "}"]
    return "\n".join(lines)


def _tanh_divisor(layer: str, n_in: int) -> list[str]:
    return [f"#define {layer}_TANH_DIVISOR {(1 << K_BIT) * n_in}  /* 2^{K_BIT} * fan_in */"]


ACTIVATIONS: dict[str, ActivationSpec] = {
    "pocket_tanh": ActivationSpec(
        127,
        127,
        "pocket_tanh({z}, {layer}_TANH_DIVISOR, {g})",
        _piecewise_c(
            "pocket_tanh",
            f"Pocket tanh: x = z / divisor (divisor = 2^{K_BIT} * fan_in), 7 linear pieces.",
            TANH_PIECES,
            "int32_t z, int32_t divisor, int32_t *g",
            "z / divisor",
        ),
        _tanh_divisor,
    ),
    "pocket_sigmoid": ActivationSpec(
        127,
        127,
        "pocket_sigmoid({z}, {g})",
        _piecewise_c(
            "pocket_sigmoid",
            f"Pocket sigmoid: x = z / 2^{K_BIT}, 7 linear pieces onto [1, 127].",
            SIGMOID_PIECES,
            "int32_t z, int32_t *g",
            f"z / {_PRESCALE}",
        ),
    ),
    "pocket_relu8bit": ActivationSpec(
        127,
        INT32_MAX,
        "pocket_relu8bit({z}, {g})",
        """\
/* Pocket ReLU 8-bit: clamp z to [0, 127]; g = 1 inside, INT32_MAX (no gradient) where clamped. */
static int32_t pocket_relu8bit(int32_t z, int32_t *g)
{
    if (z < 0) { *g = INT32_MAX; return 0; }
    if (z > 127) { *g = INT32_MAX; return 127; }
    *g = 1;
    return z;
}""",
    ),
    "pocket_leakyrelu": ActivationSpec(
        32767,
        INT32_MAX,
        "pocket_leakyrelu({z}, {g})",
        """\
/* Pocket leaky ReLU: z (g 1) on [0, 32767), z / 5 (g 5) on [-32767, 0), else +-32767. */
static int32_t pocket_leakyrelu(int32_t z, int32_t *g)
{
    if (z >= -32767 && z < 0) { *g = 5; return z / 5; }
    if (z >= 0 && z < 32767) { *g = 1; return z; }
    *g = INT32_MAX;
    return z < 0 ? -32767 : 32767;
}""",
    ),
    "plu": ActivationSpec(
        127,
        127,
        "plu({z}, {g})",
        """\
/* PLU: max((x + 1) / 10 - 1, min((x - 1) / 10 + 1, x)), clamped to [-127, 127].
 * g = 1 on the identity piece, 10 on the outer slopes, 127 where clamped. */
static int32_t plu(int32_t z, int32_t *g)
{
    const int64_t x = z;  /* x - 1 must not wrap at INT32_MIN */
    const int64_t upper = (x - 1) / 10 + 1;
    const int64_t lower = (x + 1) / 10 - 1;
    const int64_t raw = lower > (upper < x ? upper : x) ? lower : (upper < x ? upper : x);
    const int64_t y = raw < -127 ? -127 : raw > 127 ? 127 : raw;
    *g = raw != y ? 127 : raw == x ? 1 : 10;
    return (int32_t)y;
}""",
    ),
    "rescale": ActivationSpec(
        -(INT32_MIN // (1 << K_BIT)),
        1,
        "rescale({z}, {g})",
        f"""\
/* Rescale: y = z / 2^{K_BIT}, g = 1. */
static int32_t rescale(int32_t z, int32_t *g)
{{
    *g = 1;
    return z / {_PRESCALE};
}}""",
    ),
    "as_is": ActivationSpec(
        -INT32_MIN,
        1,
        "as_is({z}, {g})",
        """\
/* Identity: y = z, g = 1. */
static int32_t as_is(int32_t z, int32_t *g)
{
    *g = 1;
    return z;
}""",
    ),
}
"""The activations export-c supports. pocket_softmax normalises a whole row, which the
element-wise C layer loop does not do; it is refused with a clear error."""


def activation_c_functions(names: Sequence[str]) -> str:
    """C definitions of the activations in ``names`` (each returns y and stores g).

    Every function takes an int32 ``z`` (Python guards ``z`` to int32 before activating)
    and a pointer for the gradient inverse. The piece tables come from
    :data:`pocketnn.activations.TANH_PIECES` and ``SIGMOID_PIECES``.
    """
    return "\n\n".join(
        ACTIVATIONS[n].c_definition for n in dict.fromkeys(names) if n in ACTIVATIONS
    )
