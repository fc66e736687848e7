"""The reference product: integer units only, exact by construction."""

from __future__ import annotations

import numpy as np

from ..core.arith import INT32_EXACT


def int_product(a: np.ndarray, b: np.ndarray, unit: int) -> np.ndarray:
    """``a @ b`` with integer units only, as int64.

    ``unit = max|a| * max|b|`` bounds one product. Slices of the shared dimension of at most
    ``(2**31 - 1) // unit`` terms keep every int32 partial sum exact; when slices would be
    too thin to pay off, the product is accumulated in int64 instead.
    """
    k = a.shape[1]
    span = (INT32_EXACT - 1) // max(unit, 1)
    if span < min(k, 64):
        return np.einsum("ik,kj->ij", a.astype(np.int64), b.astype(np.int64))
    a32, b32 = a.astype(np.int32), b.astype(np.int32)
    out = None
    for start in range(0, k, span):
        part = np.einsum("ik,kj->ij", a32[:, start : start + span], b32[start : start + span])
        out = part.astype(np.int64) if out is None else np.add(out, part, out=out)
    if out is None:  # k == 0
        out = np.zeros((a.shape[0], b.shape[1]), dtype=np.int64)
    return out
