"""Every engine gives the same integers: products, guards, updates and whole training runs.

The products are checked against Python-integer arithmetic over shapes and value ranges,
including the edges where the engines switch paths (float64's 2**53 for ``blas``, the
int32 slice width and the int64 fallback for ``int``), and whole runs are compared bit for
bit across engines.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pocketnn import IntegerOverflowError, Trainer, build_mlp, configure, intmath
from pocketnn.intmath import (
    ENGINES,
    FLOAT64_EXACT,
    INT32_EXACT,
    active_columns,
    exact_matmul,
    matmul,
    trunc_div,
    trunc_div_scalar_,
)
from pocketnn.layers import Dense


def oracle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array(a.astype(object) @ b.astype(object))


def all_engines(a, b):
    """``exact_matmul`` by every engine: {engine: (product, bound)}."""
    out = {}
    for engine in ENGINES:
        with configure(engine=engine):
            out[engine] = exact_matmul(a, b)
    return out


@st.composite
def operands(draw, max_side=40):
    """Integer matrices whose bound falls on either side of the int32 and float64 edges."""
    n, k, m = draw(st.integers(1, 8)), draw(st.integers(1, max_side)), draw(st.integers(1, 8))
    a_dtype = draw(st.sampled_from([np.uint8, np.int16, np.int32, np.int64]))
    b_dtype = draw(st.sampled_from([np.int8, np.int16, np.int32, np.int64]))
    a_lim = min(np.iinfo(a_dtype).max, draw(st.sampled_from([1, 255, 2**15, 2**20, 2**31 - 1])))
    b_lim = min(np.iinfo(b_dtype).max, draw(st.sampled_from([1, 127, 2**15, 2**24, 2**31 - 1])))
    a_low = 0 if a_dtype == np.uint8 else -a_lim
    extreme = st.sampled_from([a_low, a_lim])  # extremes make the bound tight
    a = draw(hnp.arrays(a_dtype, (n, k), elements=st.integers(a_low, a_lim) | extreme))
    b = draw(
        hnp.arrays(
            b_dtype, (k, m), elements=st.integers(-b_lim, b_lim) | st.sampled_from([-b_lim, b_lim])
        )
    )
    return a, b


@settings(max_examples=300, deadline=None)
@given(operands())
def test_every_engine_is_exact_on_every_path(ab):
    a, b = ab
    bound = intmath.magnitude(a) * intmath.magnitude(b) * a.shape[1]
    if bound > intmath.INT64_SAFE:
        for engine in ENGINES:
            with configure(engine=engine), pytest.raises(IntegerOverflowError):
                exact_matmul(a, b)
        return
    expected = oracle(a, b)
    for engine, (got, used) in all_engines(a, b).items():
        assert got.dtype == np.int64 and used == bound
        assert np.array_equal(got.astype(object), expected), engine


@pytest.mark.parametrize("offset", [-1, 0, 1])
@pytest.mark.parametrize("k", [256, 257, 258, 600])
def test_int_engine_slices_at_the_int32_edge(k, offset):
    """uint8 x int16 at full scale: 257 terms fit int32, 258 do not; the sum stays exact."""
    a = np.full((3, k), 255, dtype=np.uint8)
    b = np.full((k, 2), 32767 + min(offset, 0), dtype=np.int16)
    b[::2, 1] = -32767
    a[1, ::3] = 254 + max(offset, 0)
    for engine, (got, _) in all_engines(a, b).items():
        assert np.array_equal(got.astype(object), oracle(a, b)), engine


def test_int_engine_span_is_the_largest_safe_one():
    unit = 255 * 32767
    span = (INT32_EXACT - 1) // unit
    assert span == 257 and span * unit <= 2**31 - 1 < (span + 1) * unit


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_blas_edge_agrees_with_int(offset):
    k, a_val = 4, 2**26
    b_val = (FLOAT64_EXACT + offset * k * a_val) // (k * a_val)
    a = np.full((2, k), a_val, dtype=np.int64)
    a[1, 0] = a_val - 1
    b = np.full((k, 3), b_val, dtype=np.int64)
    b[0, 0] = b_val - 1
    results = all_engines(a, b)
    assert (results["blas"][1] < FLOAT64_EXACT) == (offset < 0)
    for got, _ in results.values():
        assert np.array_equal(got.astype(object), oracle(a, b))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("policy", ["raise", "wrap"])
def test_overflow_guard_holds_on_every_engine(engine, policy):
    a = np.full((2, 784), 255, dtype=np.uint8)
    w = np.full((784, 3), 32767, dtype=np.int16)
    with configure(engine=engine, overflow=policy):
        if policy == "raise":
            with pytest.raises(IntegerOverflowError, match="fc1: forward a @ W"):
                matmul(a, w, where="fc1: forward a @ W + b")
        else:
            got = matmul(a, w, where="fc1: forward a @ W + b")
            want = np.int64(255 * 32767 * 784).astype(np.int32)
            assert got.dtype == np.int64 and np.all(got == want)


@given(
    hnp.arrays(np.int64, st.integers(1, 50), elements=st.integers(-(2**62), 2**62)),
    st.integers(1, 2**40),
)
def test_trunc_div_scalar_matches_c(a, d):
    expected = [abs(int(v)) // d * (1 if v >= 0 else -1) for v in a]
    assert trunc_div_scalar_(a.copy(), d).tolist() == expected
    assert trunc_div(a, d).tolist() == expected
    assert trunc_div(a, -d).tolist() == [-q for q in expected]


@given(
    hnp.arrays(np.int32, st.integers(1, 50), elements=st.integers(-(2**31), 2**31 - 1)),
    st.integers(1, 2**31 - 1),
)
def test_trunc_div_scalar_in_int32(a, d):
    expected = [abs(int(v)) // d * (1 if v >= 0 else -1) for v in a]
    assert trunc_div_scalar_(a.copy(), d).tolist() == expected


def test_active_columns():
    x = np.zeros((3, 10), dtype=np.uint8)
    x[0, 2] = x[2, 7] = 9
    assert active_columns(x).tolist() == [2, 7]
    assert active_columns(np.ones((2, 10), dtype=np.uint8)) is None


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 30),
    st.integers(1, 12),
    st.sampled_from([1, 2, 1000, 2**20, 2**31 + 5]),
    st.sampled_from([127, 32767, 2**20]),
    st.data(),
)
def test_dense_update_matches_the_plain_formula(n, n_in, n_out, lr_inv, clamp, data):
    """Column skipping and the int32 update give ``clamp(W + (a.T @ d) / -lr_inv)``."""
    a = data.draw(hnp.arrays(np.uint8, (n, n_in), elements=st.sampled_from([0, 0, 0, 1, 255])))
    delta = data.draw(hnp.arrays(np.int64, (n, n_out), elements=st.integers(-30000, 30000)))
    layer = Dense(n_in, n_out, "as_is", weight_clamp=clamp)
    w0 = data.draw(hnp.arrays(np.int64, (n_in, n_out), elements=st.integers(-clamp, clamp)))
    layer.set_params(w0, np.zeros((1, n_out), dtype=np.int64))
    grad = oracle(a.T, delta)
    expected = [
        [
            max(-clamp, min(clamp, int(w) - (abs(int(g)) // lr_inv) * (1 if g >= 0 else -1)))
            for w, g in zip(wr, gr)
        ]
        for wr, gr in zip(w0, grad)
    ]
    for engine in ENGINES:
        layer.set_params(w0, np.zeros((1, n_out), dtype=np.int64))
        with configure(engine=engine, overflow="wrap"):
            if int(np.abs(grad).max(initial=0)) > 2**31 - 1:
                return  # the guard's business, tested above
            layer.update(a, delta, lr_inv)
        assert layer.W.tolist() == expected, engine


def run(engine, data, dims, algorithm="dfa", epochs=2, n=1200, batch_size=20):
    x, y, xt = data
    with configure(engine=engine):
        model = build_mlp(dims)
        trainer = Trainer(model, algorithm=algorithm, seed=11, batch_size=batch_size)
        if algorithm == "bp":
            from pocketnn.train import he_init

            he_init(model, 11)
        with configure(overflow="wrap"):
            history = trainer.fit(x[:n], y[:n], epochs)
            scores = model.scores(xt[:500], batch_size=128)
    params = [(layer.W.copy(), layer.b.copy()) for layer in model.layers]
    return params, [(r.loss, r.train_correct) for r in history], scores


@pytest.mark.parametrize(
    "dims, algorithm, batch_size",
    [
        ([784, 100, 50, 10], "dfa", 20),
        ([784, 200, 100, 50, 10], "dfa", 20),
        ([784, 64, 10], "dfa", 100),
        ([784, 30, 10], "bp", 20),
    ],
)
def test_whole_runs_are_identical_across_engines(mnist, dims, algorithm, batch_size):
    data = (mnist.train_images, mnist.train_labels, mnist.test_images)
    runs = {engine: run(engine, data, dims, algorithm, batch_size=batch_size) for engine in ENGINES}
    ref_params, ref_history, ref_scores = runs["blas"]
    for engine, (params, history, scores) in runs.items():
        assert history == ref_history, engine
        assert np.array_equal(scores, ref_scores), engine
        for (w, b), (rw, rb) in zip(params, ref_params):
            assert np.array_equal(w, rw) and np.array_equal(b, rb), engine


def test_int_engine_uses_no_blas(monkeypatch):
    """The ``int`` engine never reaches the float64 path, even where it would be exact."""

    def refuse(*args):
        raise AssertionError("float path used by the int engine")

    monkeypatch.setattr(intmath, "_blas_product", refuse)
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    with configure(engine="int"):
        got, _ = exact_matmul(a, a.T.astype(np.int16))
    assert np.array_equal(got, a.astype(np.int64) @ a.T.astype(np.int64))
