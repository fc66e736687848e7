"""The compiled engine's layer kernels (``engines/compiled/layer_ops.c``) against the numpy
references they replace, bit for bit: each operation runs under ``compiled`` and under
``int`` (the reference), with hypothesis over shapes, layouts and values up to the int64
edges."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocketnn import configure
from pocketnn.core.arith import INT32_MAX, trunc_div
from pocketnn.engines import accelerated_ops
from pocketnn.nn.layers import ActivationLayer, Gradient, MaxPool2D
from pocketnn.nn.layers.conv import divide_fixed_point, fold, fold_fits, unfold
from pocketnn.nn.layers.elementwise import divide_in_layout
from pocketnn.train.momentum import MomentumSGD

pytestmark = pytest.mark.gcc

EDGES = [-(2**63), -(2**63) + 1, -(2**31), 2**31 - 1, 2**62, 2**63 - 1]


def both(fn):
    """``fn()`` under the compiled engine and under the reference engine."""
    with configure(engine="compiled"):
        fast = fn()
    with configure(engine="int"):
        slow = fn()
    return fast, slow


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def test_the_kernels_are_the_compiled_engines_only():
    with configure(engine="int"):
        assert accelerated_ops() is None
    with configure(engine="compiled"):
        assert accelerated_ops() is not None


@st.composite
def fold_case(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    k, stride, pad = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, k - 2 * pad), 9))
    w = draw(st.integers(max(1, k - 2 * pad), 9))
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    peak = draw(st.sampled_from([1, 300, 2**40, 2**60 // 16]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cols = rng.integers(-peak, peak + 1, (n * ho * wo, c * k * k), dtype=np.int64)
    return cols, (n, c, h, w), k, stride, pad, draw(st.integers(0, 12))


@settings(max_examples=150, deadline=None)
@given(case=fold_case())
def test_fold_with_its_division_is_the_reference(case):
    cols, shape, k, stride, pad, shift = case
    fast, slow = both(lambda: fold(cols, shape, k, stride, pad, shift))
    assert same(fast, slow) and fast.shape == shape


@settings(max_examples=60, deadline=None)
@given(case=fold_case())
def test_fold_is_the_adjoint_of_unfold(case):
    """<unfold(a), cols> == <a, fold(cols)> (exact, in Python integers)."""
    cols, shape, k, stride, pad, _ = case
    cols = cols % 7 - 3
    a = np.random.default_rng(0).integers(-5, 6, shape, dtype=np.int64)
    with configure(engine="compiled"):
        folded = fold(cols, shape, k, stride, pad)
    lhs = int((unfold(a, k, stride, pad).astype(object) * cols.astype(object)).sum())
    assert lhs == int((a.astype(object) * folded.astype(object)).sum())


def test_fold_bound_counts_the_overlapping_windows():
    assert fold_fits((2**63 - 1) // 9, 3, 1) and not fold_fits((2**63 - 1) // 9 + 1, 3, 1)
    assert fold_fits((2**63 - 1) // 4, 3, 2) and fold_fits(2**63 - 1, 2, 2)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from(EDGES)), min_size=1),
    st.integers(0, 62),
)
def test_the_fixed_point_division_is_trunc_div(values, shift):
    z = np.array(values, dtype=np.int64)
    fast, slow = both(lambda: divide_fixed_point(z.copy(), shift))
    assert same(fast, slow) and same(fast, trunc_div(z, 1 << shift))


@st.composite
def divide_case(draw):
    size = draw(st.integers(1, 60))
    g_values = draw(
        st.lists(st.sampled_from([1, 2, 3, 4, 5, 8, 127, 1000, 2**20, INT32_MAX]), min_size=1)
    )
    dtype = draw(st.sampled_from([np.int32, np.int64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    g = np.array(g_values, dtype=dtype)[rng.integers(0, len(g_values), size)]
    error = draw(
        st.lists(
            st.one_of(st.integers(-(2**40), 2**40), st.sampled_from(EDGES)),
            min_size=size,
            max_size=size,
        )
    )
    return np.array(error, dtype=np.int64).reshape(1, size), g.reshape(1, size)


@settings(max_examples=200, deadline=None)
@given(case=divide_case())
def test_an_errors_division_by_its_slopes_is_trunc_div(case):
    error, g = case
    with configure(engine="compiled"):
        fast = divide_in_layout(error, g)
    assert fast is not None and same(fast, trunc_div(error, g))


def test_a_slope_that_is_not_positive_is_left_to_the_reference():
    with configure(engine="compiled"):
        assert divide_in_layout(np.array([[5, 7]]), np.array([[1, 0]])) is None
        assert divide_in_layout(np.array([[5, 7]]), np.array([[-1, 2]])) is None
        with pytest.raises(ZeroDivisionError):
            ActivationLayer((2,), "leaky_relu").delta(np.array([[5, 7]]), np.array([[1, 0]]))


@st.composite
def activation_case(draw):
    name = draw(st.sampled_from(["leaky_relu", "leaky_relu8", "pocket_tanh", "pocket_sigmoid"]))
    shape = draw(st.sampled_from([(2, 7), (2, 3, 4, 5)]))
    size = int(np.prod(shape))
    values = st.one_of(st.integers(-3000, 3000), st.sampled_from(EDGES))
    z = np.array(draw(st.lists(values, min_size=size, max_size=size)), dtype=np.int64)
    z = z.reshape(shape)
    if len(shape) == 4 and draw(st.booleans()):  # a convolution's channels-last output
        z = np.ascontiguousarray(z.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return name, z, draw(st.sampled_from([1, 9, 144, 1568]))


@settings(max_examples=150, deadline=None)
@given(case=activation_case())
def test_a_tabulated_activation_is_the_reference(case):
    name, z, fan_in = case
    layer = ActivationLayer(z.shape[1:], name, fan_in=fan_in)
    (y_fast, g_fast), (y_slow, g_slow) = both(lambda: layer.forward(z))
    assert same(y_fast, y_slow) and same(g_fast, g_slow)
    assert y_fast.strides == y_slow.strides  # the layout is kept
    fast, slow = both(lambda: layer.infer(z))
    assert same(fast, slow)


@st.composite
def pool_case(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    size = draw(st.integers(1, 4))
    h, w = draw(st.integers(size, 11)), draw(st.integers(size, 11))
    dtype = draw(st.sampled_from([np.int8, np.uint8, np.int16, np.int32, np.int64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = rng.integers(-3, 4, (n, c, h, w)) % (256 if dtype == np.uint8 else 1000)
    if dtype == np.int64 and draw(st.booleans()):
        a = np.array([-(2**63), -1, 0, 2**63 - 1])[np.abs(a) % 4]
    a = a.astype(dtype)
    if draw(st.booleans()):
        a = np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    delta = rng.integers(-(2**40), 2**40, (n, c, h // size, w // size))
    if draw(st.booleans()):
        delta = np.ascontiguousarray(delta.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return size, a, delta


@settings(max_examples=150, deadline=None)
@given(case=pool_case())
def test_max_pooling_both_ways_is_the_reference(case):
    size, a, delta = case
    layer = MaxPool2D(a.shape[1], a.shape[2], a.shape[3], size)
    (y_fast, cache_fast), (y_slow, cache_slow) = both(lambda: layer.forward(a))
    assert same(y_fast, y_slow) and same(cache_fast.where, cache_slow.where)
    assert all(same(y, y_slow) for y in both(lambda: layer.infer(a)))
    fast, slow = both(lambda: layer.backward(delta, cache_fast))
    assert same(fast, slow)


@st.composite
def momentum_case(draw):
    shape = draw(st.sampled_from([(1, 1), (3, 5), (17, 4)]))
    dtype = draw(st.sampled_from([np.int16, np.int32]))
    clamp = draw(st.sampled_from([1, 300, 10783, 32767]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    param = rng.integers(-clamp, clamp + 1, shape).astype(dtype)
    peak = draw(st.sampled_from([10, 2**20, 2**40, 2**61]))
    grad = rng.integers(-peak, peak + 1, shape, dtype=np.int64)
    velocity = rng.integers(-peak, peak + 1, shape, dtype=np.int64)
    settings_ = {
        "momentum": draw(st.integers(1, 30)),
        "total_steps": draw(st.sampled_from([0, 7, 10**6])),
        "lr_inv": draw(st.sampled_from([1, 3, 1000, 1 << 20, INT32_MAX])),
        "rounding": draw(st.sampled_from(["trunc", "stochastic"])),
    }
    return param, grad, velocity, clamp, settings_, draw(st.integers(0, 5))


@settings(max_examples=150, deadline=None)
@given(case=momentum_case())
def test_the_momentum_step_is_the_reference(case):
    param, grad, velocity, clamp, keywords, steps_done = case

    def step():
        optimizer = MomentumSGD(lr_double_every=0, seed=3, **keywords)
        optimizer.steps_done = steps_done
        optimizer.velocity["fc.W"] = velocity.copy()
        rng = optimizer.rounding_stream(1)
        update = optimizer.propose(
            "fc", param, Gradient("W", grad, None, 1, int32=False), clamp, keywords["lr_inv"], rng
        )
        after = None if rng is None else rng.integers(0, 2**62)  # the stream's next draw
        return update.values, update.companions[0].values, after

    (p_fast, v_fast, next_fast), (p_slow, v_slow, next_slow) = both(step)
    assert same(p_fast, p_slow) and same(v_fast, v_slow) and next_fast == next_slow
    assert np.abs(p_fast).max() <= clamp
