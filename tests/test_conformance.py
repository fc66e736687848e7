"""One conformance suite, run for every engine: the same integers everywhere.

Like CMSIS-NN's and TFLite-Micro's kernels against their reference kernels, each engine is
checked against the reference (``int``: integer units only) and against exact
Python-integer oracles: products on both sides of every path switch, guards, the optimizer's
update, whole training runs of every supported rule, rounding and activation, the
reference's golden epoch, failing steps (which must change nothing) and concurrent runs in
threads. The generated C is held to the same bits by ``test_export_c.py``.
"""

from __future__ import annotations

import functools
import math
import re
import threading

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pocketnn import IntegerOverflowError, Trainer, build_mlp, configure
from pocketnn.core.arith import FLOAT64_EXACT, INT32_EXACT, INT64_MAX, magnitude
from pocketnn.core.products import exact_matmul, matmul
from pocketnn.engines.blas import FLOAT32_EXACT
from pocketnn.nn.layers import Dense
from pocketnn.nn.layers.dense import DenseCache
from pocketnn.nn.losses import one_hot
from pocketnn.nn.model import Sequential
from pocketnn.train.optimizer import IntegerSGD
from pocketnn.train.seeding import he_init

ENGINES = [
    pytest.param("compiled", marks=pytest.mark.gcc),
    pytest.param("fused", marks=pytest.mark.numba),
    "blas",
    "int",
]
REFERENCE = "int"


def oracle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array(a.astype(object) @ b.astype(object))


# --------------------------------------------------------------------------- products


@st.composite
def operands(draw, max_side=40):
    """Integer matrices whose bound falls on either side of the int32 and float64 edges."""
    n, k, m = draw(st.integers(1, 8)), draw(st.integers(1, max_side)), draw(st.integers(1, 8))
    a_dtype = draw(st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.int64]))
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


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=200, deadline=None)
@given(ab=operands())
def test_products_are_exact_on_every_path(engine, ab):
    a, b = ab
    bound = magnitude(a) * magnitude(b) * a.shape[1]
    with configure(engine=engine):
        if bound > INT64_MAX:  # refused only when an int64 accumulator could overflow
            with pytest.raises(IntegerOverflowError):
                exact_matmul(a, b)
            return
        got, used = exact_matmul(a, b)
    assert got.dtype == np.int64 and used == bound
    assert np.array_equal(got.astype(object), oracle(a, b))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("offset", [-1, 0, 1])
@pytest.mark.parametrize("k", [256, 257, 258, 600])
def test_products_at_the_int32_slice_edge(engine, k, offset):
    """uint8 x int16 at full scale: 257 terms fit int32, 258 do not; the sum stays exact."""
    a = np.full((3, k), 255, dtype=np.uint8)
    b = np.full((k, 2), 32767 + min(offset, 0), dtype=np.int16)
    b[::2, 1] = -32767
    a[1, ::3] = 254 + max(offset, 0)
    with configure(engine=engine):
        got, _ = exact_matmul(a, b)
    assert np.array_equal(got.astype(object), oracle(a, b))
    assert (INT32_EXACT - 1) // (255 * 32767) == 257  # the int engine's widest safe slice


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_products_at_the_float64_edge(engine, offset):
    """|a| |b| k right at 2**53, with odd partial sums that float64 would round."""
    k, a_val = 4, 2**26
    b_val = (FLOAT64_EXACT + offset * k * a_val) // (k * a_val)
    a = np.full((2, k), a_val, dtype=np.int64)
    a[1, 0] = a_val - 1
    b = np.full((k, 3), b_val, dtype=np.int64)
    b[0, 0] = b_val - 1
    with configure(engine=engine):
        got, bound = exact_matmul(a, b)
    assert (bound < FLOAT64_EXACT) == (offset < 0)
    assert np.array_equal(got.astype(object), oracle(a, b))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "k, w, path",
    [
        (3, 21931, "float32"),  # 255 * 21931 * 3 = 2**24 - 1: one float32 product
        (3, 21932, "float64"),  # above 2**24, and slices of 2 terms are too thin
        (601, 999, "float32 slices"),  # 65-term slices stay below 2**24, the sum does not
        (601, 1100, "float64"),  # 59-term slices: thinner than the 64 that pay off
    ],
)
def test_products_at_the_float32_edges(engine, k, w, path, monkeypatch):
    """int16 weights far below their dtype's bound against uint8 pixels, with odd sums past
    2**24 that float32 would round: the BLAS engines take the path the measured bound
    allows, and every engine gives the exact integers."""
    from pocketnn.engines import blas

    a = np.full((4, k), 255, dtype=np.uint8)  # the larger operand: b's bound is measured
    a[1, ::2] = 253
    b = np.full((k, 3), w, dtype=np.int16)
    b[0, 0], b[::5, 2] = w - 1, -w
    real, seen = np.matmul, []

    def spy(x, y, out):
        seen.append(out.dtype)
        return real(x, y, out=out)

    monkeypatch.setattr(blas.np, "matmul", spy)
    with configure(engine=engine):
        got, _ = exact_matmul(a, b)
    assert np.array_equal(got.astype(object), oracle(a, b))
    assert int(np.abs(oracle(a, b)).max()) > FLOAT32_EXACT or path == "float32"
    if engine in ("blas", "fused"):
        span = (FLOAT32_EXACT - 1) // (255 * w)
        want = {
            "float32": [np.float32],
            "float32 slices": [np.float32] * -(-k // span),
            "float64": [np.float64],
        }
        assert seen == want[path]
    else:
        assert seen == []


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("policy", ["raise", "wrap"])
def test_the_int32_guard(engine, policy):
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


def test_the_int_engine_uses_no_floating_point(monkeypatch):
    """``int`` never reaches the float64 path, even where it would be exact."""
    from pocketnn.core import products

    def refuse(*args):
        raise AssertionError("float path used by the int engine")

    monkeypatch.setattr(products, "blas_product", refuse)
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    with configure(engine="int"):
        got, _ = exact_matmul(a, a.T.astype(np.int16))
    assert np.array_equal(got, a.astype(np.int64) @ a.T.astype(np.int64))


# ------------------------------------------------------- the compiled engine's C product

INT32_MAX = 2**31 - 1


class ProductSpy:
    """The compiled kernels, recording the lanes and span of every ``pnn_matmul`` call."""

    def __init__(self, lib) -> None:
        self.lib, self.calls = lib, []

    def pnn_matmul_work(self, *args):
        return self.lib.pnn_matmul_work(*args)

    def pnn_matmul(self, *args):
        self.calls.append(args[11:13])
        return self.lib.pnn_matmul(*args)


def documented_lanes(peak_a: int, peak_b: int, k: int) -> str:
    """The compiled product's choice as its docstring states it (engines/compiled/gemm.py):
    int32 lanes over chunks of ``INT32_MAX // (|a| |b|)`` terms unless thinner than
    ``min(k, 64)``, two int16 terms a lane where both operands fit int16; int64 lanes
    otherwise; the reference product for values beyond int32."""
    if max(peak_a, peak_b) > INT32_MAX:
        return "reference"
    unit = peak_a * peak_b
    span = INT32_MAX // unit if unit else k
    if span < min(k, 64):
        return "int64"
    return "int16 pairs" if max(peak_a, peak_b) <= 2**15 - 1 else "int32"


LANE_NAMES = {0: "int16 pairs", 1: "int32", 2: "int64"}  # gemm.PAIRS, WORDS, WIDE


@st.composite
def lane_switches(draw):
    """Operands whose magnitudes put the compiled product just on either side of one of its
    switches: int16 pairs or int32 values (32767 or 32768), int32 or int64 lanes (a span of
    ``min(k, 64)`` or one less), one int32 chunk or several (a span of k - 1, k or k + 1,
    and k around the C's 1024-term chunks), values beyond int32. Row 0 of ``a`` and column
    0 of ``b`` are at the extremes, so ``out[0, 0]`` is the whole bound (past int32 where
    the chunks must split it); in C order, Fortran order, strided or reversed."""
    switch = draw(st.sampled_from(["pairs", "lanes", "chunks", "beyond"]))
    k = draw(st.integers(1, 130) | st.integers(1000, 1100))
    n, m = draw(st.integers(1, 30)), draw(st.integers(1, 70))
    if switch == "pairs":
        peak_a, peak_b = draw(st.integers(1, 60)), draw(st.sampled_from([2**15 - 1, 2**15]))
    elif switch == "beyond":
        peak_a, peak_b = draw(st.integers(2**31 - 1, 2**40)), draw(st.integers(1, 100))
    else:
        if switch == "lanes":
            span = min(k, 64) - draw(st.integers(0, 1))
        else:  # past 64 terms, so that int32 lanes stay and the chunks decide
            k = draw(st.integers(65, 130) | st.integers(1000, 1100))
            span = k + draw(st.integers(-1, 1))
        unit = INT32_MAX // span if span else 2**32
        peak_a = draw(st.integers(1, math.isqrt(unit)))
        peak_b = unit // peak_a
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def values(shape, peak):
        x = rng.integers(-peak, peak + 1, shape, dtype=np.int64)
        x[rng.random(shape) < 0.3] = peak
        return x

    a, b = values((n, k), peak_a), values((k, m), peak_b)
    a[0], b[:, 0] = peak_a, -peak_b
    a[0, 0] -= peak_a > 1  # odd sums, which a rounding float would not keep
    a = a.astype(draw(st.sampled_from([np.int32, np.int64])) if peak_a <= INT32_MAX else np.int64)
    b = b.astype(draw(st.sampled_from([np.int32, np.int64])))
    layout = draw(st.sampled_from(["C", "F", "strided", "reversed"]))
    if layout == "F":
        a, b = np.asfortranarray(a), np.asfortranarray(b)
    elif layout == "strided":
        a, b = np.repeat(a, 2, axis=1)[:, ::2], np.repeat(b, 2, axis=0)[::2]
    elif layout == "reversed":
        a, b = a[::-1, ::-1], b[::-1]
    return switch, a, b


@settings(max_examples=300, deadline=None)
@given(case=lane_switches())
@pytest.mark.gcc
def test_the_compiled_product_on_both_sides_of_each_switch(case):
    """The C product (not the reference one) runs with the lanes its bound allows, and its
    integers are exact on both sides of every switch and in every layout."""
    from pocketnn.core import products
    from pocketnn.engines.compiled import gemm

    switch, a, b = case
    peak_a, peak_b = magnitude(a), magnitude(b)
    want = documented_lanes(peak_a, peak_b, a.shape[1])
    chunks = -(-a.shape[1] * peak_a * peak_b // INT32_MAX)
    event(f"{switch}: {want}" + (", several int32 chunks" if chunks > 1 else ""))
    spy = ProductSpy(gemm.library())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gemm, "library", lambda: spy)
        if want != "reference":  # the C product must not hand the work back
            patch.setattr(products, "int_product", None)
        with configure(engine="compiled"):
            got, bound = exact_matmul(a, b)
    assert np.array_equal(got, a.astype(np.int64) @ b.astype(np.int64))  # exact: bound < 2**63
    assert [LANE_NAMES[lanes] for lanes, _ in spy.calls] == ([] if want == "reference" else [want])
    if want in ("int16 pairs", "int32"):  # every chunk's sum fits an int32 lane
        assert spy.calls[0][1] * peak_a * peak_b <= INT32_MAX
    assert switch != "chunks" or bound > INT32_MAX or a.shape[1] <= spy.calls[0][1]


@pytest.mark.gcc
@pytest.mark.parametrize(
    "a_dtype, a_peak, b_dtype, b_peak, k, lanes",
    [
        (np.int8, 128, np.int64, 2**15 - 1, 200, "int16 pairs"),  # int64 deltas narrowed
        (np.int8, 128, np.int64, 2**15, 200, "int32"),  # -32768 in int64: not narrowed
        (np.uint8, 255, np.int16, 32767, 258, "int16 pairs"),  # 257-term chunks: 256 paired
        (np.int16, 2**15, np.int16, 2**15, 2, "int64"),  # 2**31: past one int32 lane
        (np.int8, 128, np.uint16, 2**15 - 1, 70, "int16 pairs"),  # uint16 narrowed by value
        (np.int8, 128, np.uint16, 2**16 - 1, 70, "int32"),
        (np.int64, 2**17, np.int16, 2**15 - 1, 32, "int64"),  # wide deltas into int64 lanes
        (np.int64, 2**31, np.int8, 1, 5, "reference"),  # values beyond int32
    ],
)
def test_the_compiled_product_lanes_for_the_dtypes_seen_in_training(
    a_dtype, a_peak, b_dtype, b_peak, k, lanes, monkeypatch
):
    """Dtype or measured magnitude decides, as exact_matmul bounds the operands: 8/16-bit
    dtypes by their range, wider ones (and 16-bit arrays no larger than the other
    operand) by their values."""
    from pocketnn.engines.compiled import gemm

    rng = np.random.default_rng(k)

    def values(shape, dtype, peak):
        low = -peak if np.iinfo(dtype).min < 0 else 0
        x = rng.integers(low, peak, shape, endpoint=True)
        x.flat[:: shape[1] + 1] = low or peak  # the peak, in the dtype's range
        return x.clip(np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)

    a, b = values((40, k), a_dtype, a_peak), values((k, 3), b_dtype, b_peak)
    spy = ProductSpy(gemm.library())
    monkeypatch.setattr(gemm, "library", lambda: spy)
    with configure(engine="compiled"):
        got, _ = exact_matmul(a, b)
    assert np.array_equal(got.astype(object), oracle(a, b))
    assert [LANE_NAMES[lanes] for lanes, _ in spy.calls] == (
        [] if lanes == "reference" else [lanes]
    )


# --------------------------------------------------------------------------- one update


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 6),
    n_in=st.integers(1, 30),
    n_out=st.integers(1, 12),
    lr_inv=st.sampled_from([1, 2, 1000, 2**20, 2**31 - 1]),
    clamp=st.sampled_from([127, 32767, 2**20]),
    decay_inv=st.sampled_from([0, 0, 3, 1000]),
    data=st.data(),
)
def test_dense_gradient_and_update_match_the_plain_formula(
    engine, n, n_in, n_out, lr_inv, clamp, decay_inv, data
):
    """Column skipping, the int32 update path and decay give the textbook integers."""
    a = data.draw(hnp.arrays(np.uint8, (n, n_in), elements=st.sampled_from([0, 0, 0, 1, 255])))
    delta = data.draw(hnp.arrays(np.int64, (n, n_out), elements=st.integers(-30000, 30000)))
    w0 = data.draw(hnp.arrays(np.int64, (n_in, n_out), elements=st.integers(-clamp, clamp)))
    grad = oracle(a.T, delta)
    z = oracle(a, w0)  # the forward pass, which gives the cache, must not overflow either
    if max(int(np.abs(grad).max(initial=0)), int(np.abs(z).max(initial=0))) > 2**31 - 1:
        return  # the guard's business, tested above

    def c_div(x, d):
        return abs(int(x)) // d * (1 if x >= 0 else -1)

    expected = [
        [
            max(
                -clamp,
                min(clamp, int(w) - c_div(g, lr_inv) - (c_div(w, decay_inv) if decay_inv else 0)),
            )
            for w, g in zip(wr, gr)
        ]
        for wr, gr in zip(w0, grad)
    ]
    layer = Dense(n_in, n_out, "as_is", weight_clamp=clamp)
    layer.set_params(w0, np.zeros((1, n_out), dtype=np.int64))
    optimizer = IntegerSGD(lr_inv=lr_inv, decay_inv=decay_inv)
    with configure(engine=engine):
        grads = layer.gradient(delta, DenseCache(a, np.ones_like(delta)))
        update = optimizer.propose("fc", layer.W, grads[0], clamp, lr_inv, None)
    new = layer.W.astype(np.int64).copy()
    new[slice(None) if update.rows is None else update.rows] = update.values
    assert new.tolist() == expected
    assert np.array_equal(layer.W, w0)  # proposing writes nothing


# --------------------------------------------------------------------------- whole runs

RUNS = {  # id: (dims, activation, trainer keywords, epochs, samples)
    "paper-mnist": ([784, 100, 50, 10], "pocket_tanh", {}, 1, 1200),
    "paper-fashion": ([784, 200, 100, 50, 10], "pocket_tanh", {}, 1, 1200),
    "stochastic": (
        [784, 64, 32, 16, 10],
        "pocket_tanh",
        {"rounding": "stochastic", "batch_size": 33},
        1,
        3000,
    ),
    "sigmoid": ([784, 100, 50, 10], "pocket_sigmoid", {"lr_inv": 300}, 1, 3000),
    "relu-batch7": ([784, 40, 10], "pocket_relu8bit", {"batch_size": 7}, 1, 2000),
    "batch100": ([784, 64, 10], "pocket_tanh", {"batch_size": 100}, 2, 1200),
    "schedule-signed": (
        [784, 30, 20, 10],
        "pocket_tanh",
        {"lr_double_every": 1, "lr_inv": 200},
        2,
        1000,
    ),
    "decay": ([784, 30, 10], "pocket_tanh", {"decay_inv": 500}, 1, 1000),
    "plu": ([784, 20, 10], "plu", {}, 1, 400),
    "bp": ([784, 30, 10], "pocket_tanh", {"rule": "bp"}, 2, 1200),
    "bp-textbook": (
        [784, 30, 10],
        "pocket_tanh",
        {"rule": "bp", "bp_updated_weights": False},
        1,
        600,
    ),
}


@functools.cache
def whole_run(engine: str, case: str):
    from pocketnn.datasets import load_dataset

    data = load_dataset("mnist", verbose=False)
    dims, activation, kwargs, epochs, n = RUNS[case]
    x, y = data.train_images[:n], data.train_labels[:n]
    if case == "schedule-signed":
        x = x.astype(np.int16) - 128
    model = build_mlp(dims, activation)
    if kwargs.get("rule") == "bp":
        he_init(model, 11)
    trainer = Trainer(model, seed=11, engine=engine, overflow="wrap", **kwargs)
    history = trainer.fit(x, y, epochs)
    with configure(engine=engine):
        scores = model.scores(data.test_images[:500], batch_size=128)
    params = [(layer.W.copy(), layer.b.copy()) for layer in model.layers]
    return params, [(r.loss, r.train_correct) for r in history], scores


@pytest.mark.real_data
@pytest.mark.parametrize("case", list(RUNS))
@pytest.mark.parametrize("engine", ENGINES)
def test_whole_runs_give_the_reference_engines_bits(engine, case):
    params, history, scores = whole_run(engine, case)
    ref_params, ref_history, ref_scores = whole_run(REFERENCE, case)
    assert history == ref_history
    assert np.array_equal(scores, ref_scores)
    for (w, b), (rw, rb) in zip(params, ref_params):
        assert w.dtype == rw.dtype and np.array_equal(w, rw) and np.array_equal(b, rb)
    assert all(np.count_nonzero(w) for w, _ in params)  # every layer has learned


@pytest.mark.parametrize("engine", ENGINES)
def test_the_reference_golden_epoch(engine, golden_dfa, mnist):
    """3000 steps from zero weights land on the C++ reference's end-of-epoch weights."""
    model = build_mlp([784, 100, 50, 10])
    trainer = Trainer(
        model,
        feedback=[golden_dfa["dfa_fc1"], golden_dfa["dfa_fc2"]],
        sample_order=[golden_dfa["order_epoch1"]],
        engine=engine,
    )
    result = trainer.train_epoch(mnist.train_images, mnist.train_labels)
    for i, layer in enumerate(model.layers):
        assert np.array_equal(layer.W, golden_dfa[f"after_step3000_fc{i + 1}_W"])
        assert np.array_equal(layer.b, golden_dfa[f"after_step3000_fc{i + 1}_b"])
    assert result.loss == golden_dfa["epoch1_sum_loss"]
    assert result.train_correct == golden_dfa["epoch1_train_correct"]


# --------------------------------------------------------------------------- failing steps


def overflow_case(seed: int):
    """A tiny net with 32-bit weights, feedback, inputs and targets of random scales."""
    rng = np.random.default_rng(seed)

    def scaled(shape, dtype=np.int64):
        scale = 2 ** int(rng.integers(0, rng.choice([8, 31])))  # often small: later guards fail
        return rng.integers(-scale, scale, shape, endpoint=True).astype(dtype)

    model = Sequential(
        [
            Dense(12, 6, "pocket_tanh", name="fc1", weight_clamp=2**31 - 1),
            Dense(6, 5, "pocket_sigmoid", name="fc2", weight_clamp=2**31 - 1),
            Dense(5, 3, "pocket_tanh", name="fc3", weight_clamp=2**31 - 1),
        ]
    )
    for layer in model.layers:
        layer.set_params(scaled(layer.W.shape), scaled(layer.b.shape))
    feedback = [scaled((3, n), np.int32) for n in (6, 5)]
    n = int(rng.integers(1, 40))
    x = rng.integers(0, rng.choice([2, 256]), (n, 12)).astype(np.uint8)
    x[rng.integers(0, n, n // 2)] = 0  # blank samples: colsum(delta) sees more than a.T @ delta
    x[:, rng.integers(0, 12, 4)] = 0  # inactive columns
    targets = one_hot(rng.integers(0, 3, n), 3, 2 ** int(rng.integers(0, 31)))
    return model, feedback, x, targets, int(rng.integers(1, 5000))


@functools.cache
def step_outcome(engine: str, seed: int, rounding: str):
    model, feedback, x, targets, lr_inv = overflow_case(seed)
    before = [p.copy() for layer in model.layers for p in (layer.W, layer.b)]
    trainer = Trainer(
        model, feedback=feedback, lr_inv=lr_inv, rounding=rounding, seed=seed, engine=engine
    )
    rng = trainer.optimizer.rounding_stream(1)
    state = None if rng is None else rng.bit_generator.state
    try:
        outcome = trainer.step(x, targets=targets)
    except IntegerOverflowError as exc:
        after = [p for layer in model.layers for p in (layer.W, layer.b)]
        assert all(np.array_equal(a, b) for a, b in zip(after, before)), "a failed step wrote"
        assert rng is None or rng.bit_generator.state == state, "a failed step drew"
        outcome = str(exc)
    return outcome, [p.copy() for layer in model.layers for p in (layer.W, layer.b)]


@pytest.mark.parametrize("rounding", ["trunc", "stochastic"])
@pytest.mark.parametrize("engine", ENGINES)
def test_a_failing_step_raises_the_same_error_and_changes_nothing(engine, rounding):
    """Every guard of the step fails in some case; every engine agrees and writes nothing."""
    seen = set()
    for seed in range(300):
        outcome, params = step_outcome(engine, seed, rounding)
        ref_outcome, ref_params = step_outcome(REFERENCE, seed, rounding)
        assert outcome == ref_outcome, seed
        assert all(np.array_equal(p, r) for p, r in zip(params, ref_params)), seed
        if isinstance(outcome, str):
            seen.add(re.match(r"(fc\d: [^:]*): value", outcome).group(1))
    ops = {s.split(": ")[1] for s in seen}
    assert ops == {"forward a @ W + b", "feedback e @ B", "update a.T @ delta"} | {
        "update colsum(delta)"
    }, seen
    assert {s.split(":")[0] for s in seen} == {"fc1", "fc2", "fc3"}, seen


# --------------------------------------------------------------------------- threads


def _train_small(engine: str, seed: int, overflow: str, x, y):
    model = build_mlp([784, 24, 12, 10])
    trainer = Trainer(model, seed=seed, rounding="stochastic", engine=engine, overflow=overflow)
    trainer.fit(x, y, 2)
    with configure(engine=engine):
        scores = model.scores(x[:300])
    return [p.copy() for layer in model.layers for p in (layer.W, layer.b)], scores


@pytest.mark.parametrize("engine", ENGINES)
def test_concurrent_runs_in_threads_give_single_threaded_bits(engine, mnist):
    """Four models train and predict at once, under different contexts, in four threads."""
    x, y = mnist.train_images[:1500], mnist.train_labels[:1500]
    jobs = [(engine, 1, "raise"), (engine, 2, "wrap"), (REFERENCE, 3, "raise"), ("blas", 4, "wrap")]
    alone = [_train_small(*job, x, y) for job in jobs]
    results: dict[int, object] = {}
    barrier = threading.Barrier(len(jobs))

    def work(i, job):
        barrier.wait()
        try:
            results[i] = _train_small(*job, x, y)
        except BaseException as exc:  # reported below, with the job
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, job in enumerate(jobs):
        assert not isinstance(results[i], BaseException), (job, results[i])
        params, scores = results[i]
        assert np.array_equal(scores, alone[i][1]), job
        assert all(np.array_equal(p, q) for p, q in zip(params, alone[i][0])), job


@pytest.mark.parametrize("engine", ENGINES)
def test_configure_in_one_thread_does_not_reach_another(engine):
    """A wrap policy set in one thread leaves another thread's overflow checks on."""
    a = np.full((1, 784), 255, dtype=np.uint8)
    w = np.full((784, 1), 32767, dtype=np.int16)
    inside, release = threading.Event(), threading.Event()
    seen = {}

    def wrapping():
        with configure(engine=engine, overflow="wrap"):
            inside.set()
            release.wait(10)

    def checking():
        inside.wait(10)
        try:
            with configure(engine=engine):
                matmul(a, w, where="probe")
            seen["raised"] = False
        except IntegerOverflowError:
            seen["raised"] = True
        release.set()

    threads = [threading.Thread(target=wrapping), threading.Thread(target=checking)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"raised": True}
