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
STREAM_HEADS, STREAM_AUGMENT, STREAM_VALIDATION = 5, 6, 7


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
        # a convolution's fans are per output position: its kernel's, not the image's
        fan_in, fan_out = getattr(
            layer, "fans", (math.prod(layer.input_shape), math.prod(layer.output_shape))
        )
        r = min(init_range(fan_in, fan_out), layer.weight_clamp)
        layer.set_parameters({k: nonzero_uniform(rng, r, p.shape) for k, p in params.items()})


def spread_init(model: Sequential, seed: int, spread: int = 512) -> None:
    """Init for networks with scaling layers: non-zero uniform weights in ``[-r, r]``,
    ``r = spread`` (at most a quarter of the layer's clamp), biases zero. The scaling layers
    absorb the weights' size (see :func:`pocketnn.nn.architecture.calibrate`), so one size
    serves every layer: large enough for fine integer steps, with room to grow."""
    rng = stream(seed, STREAM_INIT)
    for layer in model.layers:
        params = layer.parameters()
        if not params:
            continue
        r = max(1, min(layer.weight_clamp // 4, spread))
        new = {k: np.zeros_like(p) for k, p in params.items()}
        new["W"] = nonzero_uniform(rng, r, params["W"].shape)
        layer.set_parameters(new)


def fixed_point_init(model: Sequential, seed: int) -> None:
    """Kaiming-uniform init of fixed-point layers, in integers: ``W`` uniform in ``[-r, r]``
    with ``r = isqrt(6 * 4**f / fan_in)`` (``sqrt(6 / fan_in)`` in the units of ``f``
    fractional bits; at most the clamp), from the seed's init stream, layer after layer."""
    rng = stream(seed, STREAM_INIT)
    for layer in model.layers:
        params = layer.parameters()
        if not params:
            continue
        frac_bits = getattr(layer.config, "frac_bits", 0)
        fan_in = getattr(layer, "fans", (math.prod(layer.input_shape), 0))[0]
        r = max(1, min(isqrt(6 * 4**frac_bits // fan_in), layer.weight_clamp))
        new = {k: np.zeros_like(p) for k, p in params.items()}
        new["W"] = rng.integers(-r, r + 1, size=params["W"].shape, dtype=np.int64)
        layer.set_parameters(new)
