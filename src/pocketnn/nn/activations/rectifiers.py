"""Rectifier-like pocket activations: ReLU 8-bit, leaky ReLU and PLU."""

from __future__ import annotations

import numpy as np

from ...core.arith import INT32_MAX, trunc_div
from .base import Activation, tabulate


def flat_outside(inside: np.ndarray, g_inside: int | np.ndarray) -> np.ndarray:
    """``g_inside`` where the piece has a slope, INT32_MAX (no gradient) elsewhere."""
    return np.where(inside, g_inside, INT32_MAX).astype(np.int64)


def pocket_relu8bit(z: np.ndarray, fan_in: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pocket ReLU 8-bit: ``y = clamp(z, 0, 127)``; ``g = 1`` inside, INT32_MAX where clamped."""
    z = np.asarray(z, dtype=np.int64)
    return np.clip(z, 0, 127), flat_outside((z >= 0) & (z <= 127), 1)


def pocket_leakyrelu(z: np.ndarray, fan_in: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pocket leaky ReLU: ``z`` (g 1) on [0, 32767), ``z/5`` (g 5) on [-32767, 0), else ±32767."""
    z = np.asarray(z, dtype=np.int64)
    negative = (z >= -32767) & (z < 0)
    positive = (z >= 0) & (z < 32767)
    y = np.where(negative, trunc_div(z, 5), np.clip(z, -32767, 32767))
    return y, flat_outside(negative | positive, np.where(negative, 5, 1))


def leaky_relu8(z: np.ndarray, fan_in: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Integer leaky ReLU for 8-bit activations: ``z`` (g 1) on [0, 127], ``z / 4`` (g 4) on
    [-127, 0), flat at 127 above and at -31 below, where ``g`` is 127 (the pocket family's
    slope of a saturated piece: a saturated unit still gets a little error and can come
    back, where a zero slope would let it die)."""
    z = np.asarray(z, dtype=np.int64)
    negative = (z >= -127) & (z < 0)
    positive = (z >= 0) & (z <= 127)
    y = np.where(z < 0, trunc_div(np.maximum(z, -127), 4), np.minimum(z, 127))
    g = np.where(negative, 4, np.where(positive, 1, 127))
    return y, g


LEAKY_INV = 8
"""Inverse slope of :func:`leaky_relu`'s negative piece."""


def leaky_relu(z: np.ndarray, fan_in: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clipped leaky ReLU for fixed-point networks: ``z`` (g 1) on [0, 127], ``z / 8`` (g 8)
    on [-1016, 0), flat at 127 above and -127 below with no gradient (g INT32_MAX): the
    error of backprop must be the true derivative's for the optimizer's steps to add up."""
    z = np.asarray(z, dtype=np.int64)
    low = -127 * LEAKY_INV
    y = np.where(z < 0, trunc_div(np.maximum(z, low), LEAKY_INV), np.minimum(z, 127))
    g = np.where((z >= 0) & (z <= 127), 1, np.where((z < 0) & (z >= low), LEAKY_INV, INT32_MAX))
    return y, g.astype(np.int64)


PLU_ALPHA_INV = 10
PLU_C = 1


def plu(z: np.ndarray, fan_in: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise linear unit ``max(a(x+c)-c, min(a(x-c)+c, x))``, a = 1/10, c = 1.

    Implemented from the published formula (the reference's version is broken), with
    truncating division, clamped to [-127, 127]. ``g`` is 1 on the identity piece, 10 on the
    two outer slopes and 127 where clamped.
    """
    x = np.asarray(z, dtype=np.int64)
    upper = trunc_div(x - PLU_C, PLU_ALPHA_INV) + PLU_C
    lower = trunc_div(x + PLU_C, PLU_ALPHA_INV) - PLU_C
    raw = np.maximum(lower, np.minimum(upper, x))
    y = np.clip(raw, -127, 127)
    g = np.where(raw != y, 127, np.where(raw == x, 1, PLU_ALPHA_INV))
    return y, g.astype(np.int64)


POCKET_RELU8BIT = Activation(
    name="pocket_relu8bit",
    function=pocket_relu8bit,
    out_bound=127,
    g_max=INT32_MAX,
    # constant below 0 and above 127: the table's clip is exact
    table=tabulate(pocket_relu8bit, -1, 128, lambda fan_in: 1),
    c_source="""\
/* Pocket ReLU 8-bit: clamp z to [0, 127]; g = 1 inside, INT32_MAX (no gradient) where clamped. */
static int32_t pocket_relu8bit(int32_t z, int32_t *g)
{
    if (z < 0) { *g = INT32_MAX; return 0; }
    if (z > 127) { *g = INT32_MAX; return 127; }
    *g = 1;
    return z;
}""",
    c_call="pocket_relu8bit({z}, {g})",
)
POCKET_LEAKYRELU = Activation(
    name="pocket_leakyrelu",
    function=pocket_leakyrelu,
    out_bound=32767,
    g_max=INT32_MAX,
    c_source="""\
/* Pocket leaky ReLU: z (g 1) on [0, 32767), z / 5 (g 5) on [-32767, 0), else +-32767. */
static int32_t pocket_leakyrelu(int32_t z, int32_t *g)
{
    if (z >= -32767 && z < 0) { *g = 5; return z / 5; }
    if (z >= 0 && z < 32767) { *g = 1; return z; }
    *g = INT32_MAX;
    return z < 0 ? -32767 : 32767;
}""",
    c_call="pocket_leakyrelu({z}, {g})",
)
LEAKY_RELU8 = Activation(
    name="leaky_relu8",
    function=leaky_relu8,
    out_bound=127,
    g_max=127,
    # constant below -127 and above 127: the table's clip is exact
    table=tabulate(leaky_relu8, -128, 128, lambda fan_in: 1),
    c_source="""\
/* Integer leaky ReLU 8-bit: z (g 1) on [0, 127], z / 4 (g 4) on [-127, 0), flat (g 127)
 * outside. */
static int32_t leaky_relu8(int32_t z, int32_t *g)
{
    if (z > 127) { *g = 127; return 127; }
    if (z >= 0) { *g = 1; return z; }
    if (z >= -127) { *g = 4; return z / 4; }
    *g = 127;
    return -127 / 4;
}""",
    c_call="leaky_relu8({z}, {g})",
)
LEAKY_RELU = Activation(
    name="leaky_relu",
    function=leaky_relu,
    out_bound=127,
    g_max=INT32_MAX,
    # constant below -1016 and above 127: the table's clip is exact
    table=tabulate(leaky_relu, -127 * LEAKY_INV - 1, 128, lambda fan_in: 1),
    c_source="""\
/* Clipped leaky ReLU: z (g 1) on [0, 127], z / 8 (g 8) on [-1016, 0), flat outside
 * (127 above, -127 below, no gradient). */
static int32_t leaky_relu(int32_t z, int32_t *g)
{
    if (z > 127) { *g = INT32_MAX; return 127; }
    if (z >= 0) { *g = 1; return z; }
    if (z >= -1016) { *g = 8; return z / 8; }
    *g = INT32_MAX;
    return -127;
}""",
    c_call="leaky_relu({z}, {g})",
)
PLU = Activation(
    name="plu",
    function=plu,
    out_bound=127,
    g_max=127,
    c_source="""\
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
    c_call="plu({z}, {g})",
)
