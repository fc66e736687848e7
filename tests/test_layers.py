"""CNN layers against naive loop-based integer references: forward, delta, gradient.

Each layer's fast path (unfolded exact products, reshapes) is checked bit for bit against
a plain Python-integer loop over every index, with hypothesis over shapes, strides,
paddings and value ranges, on every engine.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocketnn import configure
from pocketnn.core.arith import signed_dtype_for
from pocketnn.nn.layers import (
    ActivationLayer,
    AvgPool2D,
    Conv2D,
    Flatten,
    MaxPool2D,
    Scale,
)
from pocketnn.nn.layers.elementwise import shrink_error

ENGINES = [
    pytest.param("compiled", marks=pytest.mark.gcc),
    pytest.param("fused", marks=pytest.mark.numba),
    "blas",
    "int",
]


def c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


@st.composite
def conv_case(draw):
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    k, stride, pad = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, k - 2 * pad), 9))
    w = draw(st.integers(max(1, k - 2 * pad), 9))
    lim = draw(st.sampled_from([1, 127, 255]))
    dtype = np.uint8 if lim == 255 else np.int8
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = rng.integers(0 if lim == 255 else -lim, lim + 1, (n, c, h, w)).astype(dtype)
    clamp = draw(st.sampled_from([1, 300, 32767]))
    frac_bits, bias = draw(st.sampled_from([(0, True), (3, True), (10, False)]))
    layer = Conv2D(
        c, o, k, h, w, stride, pad, name="conv", weight_clamp=clamp, frac_bits=frac_bits, bias=bias
    )
    W = rng.integers(-clamp, clamp + 1, layer.W.shape)
    b = rng.integers(-clamp, clamp + 1, layer.b.shape) if bias else np.zeros(layer.b.shape)
    layer.set_parameters({"W": W, "b": b.astype(np.int64)})
    delta = rng.integers(-300, 301, (n, o, *layer.output_shape[1:]))
    return layer, a, delta


def naive_conv(layer: Conv2D, a: np.ndarray):
    """Forward, and for a delta the input error and the gradients, by explicit loops (a
    fixed-point layer's sum and error divided by ``2**frac_bits``, truncating)."""
    cfg = layer.config
    unit = 1 << cfg.frac_bits
    k, s, p = cfg.kernel, cfg.stride, cfg.padding
    W = layer.W.astype(object).reshape(cfg.in_channels, k, k, cfg.out_channels)
    n = a.shape[0]
    _, ho, wo = layer.output_shape

    def taps(oy, ox):
        for c in range(cfg.in_channels):
            for ky in range(k):
                for kx in range(k):
                    y, x = oy * s + ky - p, ox * s + kx - p
                    if 0 <= y < cfg.height and 0 <= x < cfg.width:
                        yield c, ky, kx, y, x

    z = np.zeros((n, cfg.out_channels, ho, wo), dtype=object)
    for i in range(n):
        for o in range(cfg.out_channels):
            for oy in range(ho):
                for ox in range(wo):
                    total = int(layer.b[0, o]) + sum(
                        int(a[i, c, y, x]) * W[c, ky, kx, o] for c, ky, kx, y, x in taps(oy, ox)
                    )
                    z[i, o, oy, ox] = c_div(total, unit)

    def backward(delta):
        err = np.zeros(a.shape, dtype=object)
        gw = np.zeros(W.shape, dtype=object)
        for i in range(n):
            for o in range(cfg.out_channels):
                for oy in range(ho):
                    for ox in range(wo):
                        d = int(delta[i, o, oy, ox])
                        for c, ky, kx, y, x in taps(oy, ox):
                            err[i, c, y, x] += d * W[c, ky, kx, o]
                            gw[c, ky, kx, o] += d * int(a[i, c, y, x])
        gb = delta.astype(object).sum(axis=(0, 2, 3))
        err = np.vectorize(lambda v: c_div(v, unit), otypes=[object])(err)
        return err, gw.reshape(layer.W.shape), gb.reshape(1, -1)

    return z, backward


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=60, deadline=None)
@given(case=conv_case())
def test_conv2d_matches_the_loop_reference(engine, case):
    layer, a, delta = case
    z_ref, backward = naive_conv(layer, a)
    err_ref, gw_ref, gb_ref = backward(delta)
    with configure(engine=engine, overflow="wrap"):
        bound = 255 * layer.weight_clamp * layer.fan_in + layer.weight_clamp
        z, cache = layer.forward(a)
        if bound < 2**31:  # else the int32 guard's business (wrap), tested elsewhere
            assert np.array_equal(z.astype(object), z_ref)
            assert np.array_equal(layer.infer(a), z)
        assert np.array_equal(layer.delta(delta, cache), delta)  # no activation
        err = layer.backward(delta, cache)
        grads = {g.name: g for g in layer.gradient(delta, cache)}
    assert err.shape == a.shape and np.array_equal(err.astype(object), err_ref)
    assert np.array_equal(grads["W"].value.astype(object), gw_ref)
    if layer.config.bias:
        assert np.array_equal(grads["b"].value.astype(object), gb_ref)
    else:  # no bias: nothing to train but W
        assert set(grads) == {"W"} and set(layer.parameters()) == {"W"}
    positions = layer.out_height * layer.out_width
    assert grads["W"].scale == (1 if layer.config.frac_bits else positions)


@st.composite
def pool_case(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    size = draw(st.integers(1, 4))
    h, w = draw(st.integers(size, 11)), draw(st.integers(size, 11))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # few distinct values: ties, which must go to the first maximum
    a = rng.integers(-3, 4, (n, c, h, w)).astype(np.int8)
    delta = rng.integers(-1000, 1001, (n, c, h // size, w // size))
    return size, a, delta


def in_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """``x`` with the same values in another memory layout: C order, channels last (a
    convolution's output), or a strided slice of a larger array."""
    if layout == "channels_last" and x.ndim == 4:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if layout == "strided":
        wide = np.zeros((*x.shape[:-1], 2 * x.shape[-1]), dtype=x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x


INT64_EDGES = st.sampled_from([-(2**63), -(2**63) + 1, -(2**31) - 1, 2**31, 2**63 - 1])


@st.composite
def pool_layout_case(draw):
    size, a, delta = draw(pool_case())
    wide = draw(st.booleans())
    if wide:  # int64 extremes, ties included
        edges = np.array([-(2**63), -1, 0, 2**63 - 1], dtype=np.int64)
        a = edges[np.abs(a.astype(np.int64)) % 4]
    layout = draw(st.sampled_from(["c", "channels_last", "strided"]))
    return size, in_layout(a, layout), in_layout(delta, draw(st.sampled_from(["c", layout])))


@settings(max_examples=120, deadline=None)
@given(case=pool_layout_case())
def test_max_pooling_matches_the_loop_reference(case):
    """In every layout, int64 extremes and ties included (the first maximum wins)."""
    size, a, delta = case
    n, c, h, w = a.shape
    layer = MaxPool2D(c, h, w, size)
    y, cache = layer.forward(a)
    err = layer.backward(layer.delta(delta, cache), cache)
    assert y.dtype == a.dtype and err.dtype == delta.dtype
    err_ref = np.zeros(a.shape, dtype=np.int64)
    for i in range(n):
        for ch in range(c):
            for oy in range(h // size):
                for ox in range(w // size):
                    best = None
                    for ky in range(size):  # row-major: the first maximum wins
                        for kx in range(size):
                            v = int(a[i, ch, oy * size + ky, ox * size + kx])
                            if best is None or v > best[0]:
                                best = (v, oy * size + ky, ox * size + kx)
                    assert y[i, ch, oy, ox] == best[0]
                    err_ref[i, ch, best[1], best[2]] += delta[i, ch, oy, ox]
    assert np.array_equal(err, err_ref)
    assert np.array_equal(layer.infer(a), y)
    assert layer.gradient(delta, cache) == [] and layer.parameters() == {}


def test_max_pooling_tells_apart_more_than_256_window_offsets():
    a = np.zeros((1, 1, 17, 17), dtype=np.int8)
    a[0, 0, 16, 15] = 5  # offset 16 * 17 + 15 = 287: beyond a byte
    layer = MaxPool2D(1, 17, 17, 17)
    y, cache = layer.forward(a)
    err = layer.backward(np.array([[[[7]]]]), cache)
    assert y.item() == 5 and err[0, 0, 16, 15] == 7 and err.sum() == 7


@settings(max_examples=80, deadline=None)
@given(case=pool_case())
def test_average_pooling_truncates_like_c(case):
    size, a, delta = case
    n, c, h, w = a.shape
    layer = AvgPool2D(c, h, w, size)
    y, cache = layer.forward(a.astype(np.int64) * 37)
    err = layer.backward(delta, cache)
    for i in range(n):
        for ch in range(c):
            for oy in range(h // size):
                for ox in range(w // size):
                    win = a[i, ch, oy * size : oy * size + size, ox * size : ox * size + size]
                    assert y[i, ch, oy, ox] == c_div(int(win.astype(np.int64).sum()) * 37, size**2)
                    share = c_div(int(delta[i, ch, oy, ox]), size**2)
                    assert np.all(
                        err[i, ch, oy * size : oy * size + size, ox * size : ox * size + size]
                        == share
                    )
    assert np.all(err[:, :, (h // size) * size :, :] == 0)


@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5))
def test_flatten_round_trips(c, h, w):
    layer = Flatten(c, h, w)
    a = np.arange(2 * c * h * w, dtype=np.int64).reshape(2, c, h, w)
    y, cache = layer.forward(a)
    assert y.shape == (2, c * h * w) and np.array_equal(y[1], a[1].ravel())
    assert np.array_equal(layer.backward(y, cache), a)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=30),
    st.integers(1, 10**6),
    st.sampled_from([1, 127, 32767]),
    st.integers(1, 20),
)
def test_scale_divides_truncating_then_clamps_and_shrinks_the_error(values, divisor, bound, bits):
    z = np.array(values, dtype=np.int64).reshape(1, -1)
    layer = Scale((z.shape[1],), divisor, bound, bits)
    y, cache = layer.forward(z)
    assert y.tolist()[0] == [max(-bound, min(bound, c_div(v, divisor))) for v in values]
    delta = layer.delta(z, cache)
    peak = max(abs(v) for v in values)
    shift = max(0, peak.bit_length() - bits)
    assert delta.tolist()[0] == [c_div(v, 2**shift) for v in values]
    assert int(np.abs(delta).max()) < 2**bits
    assert np.array_equal(layer.backward(delta, cache), delta)


def test_shrink_error_leaves_small_errors_exact():
    e = np.array([[-255, 3, 0, 255]])
    assert shrink_error(e, 8) is e


@given(st.lists(st.integers(-400, 400), min_size=1, max_size=30))
def test_activation_layer_divides_the_error_by_g(values):
    z = np.array(values, dtype=np.int64).reshape(1, -1)
    layer = ActivationLayer((z.shape[1],), "leaky_relu8")
    y, g = layer.forward(z)
    assert y.dtype == np.int8
    error = np.full_like(z, 1000)
    expected = [c_div(1000, int(gi)) for gi in g[0]]
    assert layer.delta(error, g).tolist()[0] == expected


@st.composite
def activation_case(draw):
    from pocketnn.nn.activations import ACTIVATIONS

    name = draw(st.sampled_from(sorted(n for n, a in ACTIVATIONS.items() if a.elementwise)))
    shape = draw(st.sampled_from([(1, 7), (2, 5), (2, 3, 2, 4)]))
    dtype = draw(st.sampled_from([np.int64, np.int32, np.int16, np.int8, np.uint8]))
    info = np.iinfo(dtype)
    near = st.integers(max(int(info.min), -1500), min(int(info.max), 1500))
    values = st.one_of(near, st.integers(int(info.min), int(info.max)))
    if dtype == np.int64:
        values = st.one_of(values, INT64_EDGES)
    size = int(np.prod(shape))
    z = np.array(draw(st.lists(values, min_size=size, max_size=size)), dtype=dtype)
    error = draw(st.lists(st.one_of(st.integers(-(2**15), 2**15), INT64_EDGES), min_size=size))
    error = np.array(error[:size], dtype=np.int64).reshape(shape)
    layout = draw(st.sampled_from(["c", "channels_last", "strided"]))
    fan_in = draw(st.sampled_from([1, 9, 144, 1568]))
    return name, in_layout(z.reshape(shape), layout), in_layout(error, layout), fan_in


@settings(max_examples=300, deadline=None)
@given(case=activation_case())
def test_activation_layer_is_its_function_for_every_int64_and_layout(case):
    """The table lookup and the few-divisor delta against the plain function and
    ``trunc_div``, over the whole int64 range, every input dtype and layout."""
    from pocketnn.core.arith import trunc_div

    name, z, error, fan_in = case
    layer = ActivationLayer(z.shape[1:], name, fan_in=fan_in)
    y_ref, g_ref = layer.function(z, fan_in)
    y, g = layer.forward(z)
    assert y.dtype == layer.infer(z).dtype == signed_dtype_for(layer.function.out_bound)
    assert np.array_equal(y, y_ref.astype(y.dtype)) and np.array_equal(g, g_ref)
    assert np.array_equal(layer.infer(z), y)
    assert np.array_equal(layer.delta(error, g), trunc_div(error, g_ref))
    if z.ndim == 4 and z.flags.c_contiguous is False and z.transpose(0, 2, 3, 1).flags.c_contiguous:
        # a convolution's channels-last output stays channels-last: its rows are free
        assert y.transpose(0, 2, 3, 1).flags.c_contiguous
        assert layer.delta(error, g).transpose(0, 2, 3, 1).flags.c_contiguous
