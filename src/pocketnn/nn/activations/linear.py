"""Linear output activations: identity, rescale, and pocket softmax (not element-wise)."""

from __future__ import annotations

import numpy as np

from ...core.arith import INT32_MAX, INT32_MIN, trunc_div
from .base import Activation
from .piecewise import K_BIT
from .rectifiers import flat_outside


def rescale(z: np.ndarray, fan_in: int = 0, k: int = K_BIT) -> tuple[np.ndarray, np.ndarray]:
    """Rescale: ``y = z / 2**k`` with ``g = 1``."""
    y = trunc_div(z, 1 << k)
    return y, np.ones_like(y)


def as_is(z: np.ndarray, fan_in: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Identity: ``y = z``, ``g = 1``."""
    y = np.array(z, dtype=np.int64)
    return y, np.ones_like(y)


def pocket_softmax(z: np.ndarray, fan_in: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pocket softmax per row: positives times ``INT32_MAX / (sum of positives)``, others 0."""
    z = np.asarray(z, dtype=np.int64)
    positive = np.maximum(z, 0)
    total = positive.sum(axis=-1, keepdims=True)
    y = positive * (INT32_MAX // np.maximum(total, 1))
    return y, flat_outside(y != 0, 1)


RESCALE = Activation(
    name="rescale",
    function=rescale,
    out_bound=-(INT32_MIN // (1 << K_BIT)),
    g_max=1,
    c_source=f"""\
/* Rescale: y = z / 2^{K_BIT}, g = 1. */
static int32_t rescale(int32_t z, int32_t *g)
{{
    *g = 1;
    return z / (1 << {K_BIT});
}}""",
    c_call="rescale({z}, {g})",
)
AS_IS = Activation(
    name="as_is",
    function=as_is,
    out_bound=-INT32_MIN,
    g_max=1,
    c_source="""\
/* Identity: y = z, g = 1. */
static int32_t as_is(int32_t z, int32_t *g)
{
    *g = 1;
    return z;
}""",
    c_call="as_is({z}, {g})",
)
# Normalises a whole row, which an element-wise C layer loop does not do: not exportable.
POCKET_SOFTMAX = Activation(
    name="pocket_softmax",
    function=pocket_softmax,
    out_bound=INT32_MAX,
    g_max=INT32_MAX,
    elementwise=False,
)
