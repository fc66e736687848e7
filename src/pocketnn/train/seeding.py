"""Everything random in training, derived from the run's seed by named streams.

Each use of randomness has its own stream ``[seed, stream, ...]``, so adding a random
feature never shifts the draws of another, and a resumed run draws what an uninterrupted
one would.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..core.arith import isqrt
from ..nn.model import Sequential

STREAM_FEEDBACK, STREAM_INIT, STREAM_ORDER, STREAM_ROUNDING = 1, 2, 3, 4


def init_range(n_in: int, n_out: int, limit: int = 32767) -> int:
    """The reference's init bound ``isqrt(12 * 32767 // (n_in + n_out))``."""
    return isqrt(12 * limit // (n_in + n_out))


def nonzero_uniform(rng: np.random.Generator, r: int, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform integers in [-r, r] without zero, as int64."""
    u = rng.integers(0, 2 * r, size=shape, dtype=np.int64)
    return u - r + (u >= r)


def stream(seed: int, *keys: int) -> np.random.Generator:
    """The generator of one named stream of a seed."""
    return np.random.default_rng([seed, *keys])


def seeded_order(seed: int, n: int) -> Callable[[int], np.ndarray]:
    """Epoch number -> a permutation of ``range(n)``, fixed by ``seed`` and the epoch alone."""

    def order(epoch: int) -> np.ndarray:
        return stream(seed, STREAM_ORDER, epoch).permutation(n)

    return order


def he_init(model: Sequential, seed: int) -> None:
    """Backprop's He-style init: non-zero uniform integers in [-r, r], per layer, in order.

    ``r`` is the reference's init range of the layer (at most its clamp); the draws come
    from the seed's init stream, parameter after parameter.
    """
    rng = stream(seed, STREAM_INIT)
    for layer in model.layers:
        params = layer.parameters()
        if not params:
            continue
        fan_in, fan_out = math.prod(layer.input_shape), math.prod(layer.output_shape)
        r = min(init_range(fan_in, fan_out), layer.weight_clamp)
        layer.set_parameters({k: nonzero_uniform(rng, r, p.shape) for k, p in params.items()})
