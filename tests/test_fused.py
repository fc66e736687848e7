"""The ``fused`` engine gives the bits of ``blas``: divisions, whole runs, errors, fallbacks.

Whole training runs (the golden reference epoch included) are compared bit for bit with
the ``blas`` engine, overflows must raise the same error and leave the same parameters,
and the compiled kernels must only ever have been called with integer arrays and contain
no floating-point instruction.
"""

import importlib.util
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

numba = pytest.importorskip("numba")

from pocketnn import IntegerOverflowError, Trainer, build_mlp, configure, fused  # noqa: E402
from pocketnn.layers import Dense  # noqa: E402
from pocketnn.losses import one_hot  # noqa: E402
from pocketnn.model import Sequential  # noqa: E402
from pocketnn.train import he_init  # noqa: E402

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def c_div(n: int, d: int) -> int:
    return abs(n) // d * (1 if n >= 0 else -1)


@settings(max_examples=500, deadline=None)
@given(
    st.integers(INT32_MIN, INT32_MAX) | st.sampled_from([INT32_MIN, INT32_MAX, 0, -1, 1]),
    st.integers(1, 2**31) | st.sampled_from([1, 2, 3, 7, 1000, 2**30 + 1, 2**31 - 1, 2**31]),
)
def test_magic_division_is_c_division(n, d):
    assert fused.tdiv(n, *fused.magic(d)) == c_div(n, d)


def test_magic_division_edges():
    for d in [1, 2, 3, 5, 127, 255, 256 * 784, 1000, 2**16 + 1, 2**31 - 1, 2**31]:
        m, s, _ = fused.magic(d)
        assert m <= 2**32 and s <= 62
        for n in (INT32_MIN, INT32_MIN + 1, -d - 1, -d, -d + 1, -1, 0, 1, d - 1, d, INT32_MAX):
            if INT32_MIN <= n <= INT32_MAX:
                assert fused.tdiv(n, *fused.magic(d)) == c_div(n, d), (n, d)
    with pytest.raises(ValueError):
        fused.magic(2**31 + 1)


def train(engine, x, y, dims, activation="pocket_tanh", epochs=1, **kwargs):
    """Train from zero weights; returns the parameters and per-epoch (loss, correct)."""
    with configure(engine=engine):
        model = build_mlp(dims, activation)
        trainer = Trainer(model, seed=5, **kwargs)
        history = trainer.fit(x, y, epochs)
    return [(layer.W, layer.b) for layer in model.layers], [
        (r.loss, r.train_correct) for r in history
    ]


def assert_same_runs(a, b):
    (params_a, history_a), (params_b, history_b) = a, b
    assert history_a == history_b
    for (wa, ba), (wb, bb) in zip(params_a, params_b):
        assert wa.dtype == wb.dtype and np.array_equal(wa, wb) and np.array_equal(ba, bb)


@pytest.mark.parametrize(
    "dims, activation, kwargs",
    [
        ([784, 100, 50, 10], "pocket_tanh", {}),  # the paper network, 300 steps
        ([784, 100, 50, 10], "pocket_tanh", {"rounding": "stochastic"}),
        ([784, 100, 50, 10], "pocket_sigmoid", {"lr_inv": 300}),
        ([784, 40, 10], "pocket_relu8bit", {"batch_size": 7}),
        ([784, 64, 32, 16, 10], "pocket_tanh", {"rounding": "stochastic", "batch_size": 33}),
    ],
)
def test_whole_runs_match_blas(mnist, dims, activation, kwargs):
    x, y = mnist.train_images[:6000], mnist.train_labels[:6000]
    runs = [train(engine, x, y, dims, activation, **kwargs) for engine in ("blas", "fused")]
    assert_same_runs(*runs)
    assert all(np.count_nonzero(w) for w, _ in runs[0][0])  # every layer has learned


def test_second_epoch_and_schedule_match_blas(mnist):
    """Two epochs with lr_inv doubling after the first, on signed (non-pixel) input."""
    x = mnist.train_images[:1000].astype(np.int16) - 128
    y = mnist.train_labels[:1000]
    runs = [
        train(e, x, y, [784, 30, 20, 10], epochs=2, lr_double_every=1, lr_inv=200)
        for e in ("blas", "fused")
    ]
    assert_same_runs(*runs)


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls of the fused step's main kernel."""
    seen = []
    kernel = fused.dfa_deltas
    monkeypatch.setattr(fused, "dfa_deltas", lambda *a: seen.append(1) or kernel(*a))
    return seen


def test_golden_reference_epoch_on_the_fused_engine(golden_dfa, mnist, calls):
    """3000 steps from zero weights land on the C++ reference's end-of-epoch weights."""
    with configure(engine="fused"):
        model = build_mlp([784, 100, 50, 10])
        trainer = Trainer(
            model,
            feedback=[golden_dfa["dfa_fc1"], golden_dfa["dfa_fc2"]],
            sample_order=[golden_dfa["order_epoch1"]],
        )
        result = trainer.train_epoch(mnist.train_images, mnist.train_labels)
    assert len(calls) == 3000
    for i, layer in enumerate(model.layers):
        assert np.array_equal(layer.W, golden_dfa[f"after_step3000_fc{i + 1}_W"])
        assert np.array_equal(layer.b, golden_dfa[f"after_step3000_fc{i + 1}_b"])
    assert result.loss == golden_dfa["epoch1_sum_loss"]
    assert result.train_correct == golden_dfa["epoch1_train_correct"]


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


def step_outcome(engine, seed, rounding):
    model, feedback, x, targets, lr_inv = overflow_case(seed)
    trainer = Trainer(model, feedback=feedback, lr_inv=lr_inv, rounding=rounding, seed=seed)
    with configure(engine=engine, overflow="raise"):
        try:
            outcome = trainer.step(x, targets)
        except IntegerOverflowError as exc:
            outcome = str(exc)
    return outcome, [(layer.W.copy(), layer.b.copy()) for layer in model.layers]


@pytest.mark.parametrize("rounding", ["trunc", "stochastic"])
def test_overflow_raises_the_same_error_and_leaves_the_same_weights(rounding, calls):
    """Every guard of the step fails in some case; both engines agree on all of them."""
    seen, past_fc1_forward = set(), 0
    for seed in range(400):
        (out_b, params_b), (out_f, params_f) = (
            step_outcome(engine, seed, rounding) for engine in ("blas", "fused")
        )
        assert out_b == out_f, seed
        for (wb, bb), (wf, bf) in zip(params_b, params_f):
            assert np.array_equal(wb, wf) and np.array_equal(bb, bf), seed
        if isinstance(out_b, str):
            seen.add(re.match(r"(fc\d: [^:]*): value", out_b).group(1))
        past_fc1_forward += not str(out_b).startswith("fc1: forward")
    assert len(calls) == past_fc1_forward  # the kernels ran wherever blas got past fc1
    ops = {s.split(": ")[1] for s in seen}
    assert ops == {"forward a @ W + b", "feedback e @ B", "update a.T @ delta"} | {
        "update colsum(delta)"
    }, seen
    assert {s.split(":")[0] for s in seen} == {"fc1", "fc2", "fc3"}, seen


def test_an_overflow_names_the_layer(calls):
    model = Sequential(
        [Dense(n, m, name=f"fc{i}", weight_clamp=2**31 - 1) for i, n, m in ((1, 4, 3), (2, 3, 2))]
    )
    model.layers[1].set_params(np.full((3, 2), 2**30), np.zeros(2, dtype=np.int64))
    x = np.full((2, 4), 255, dtype=np.uint8)
    model.layers[0].set_params(np.full((4, 3), 32767), np.zeros(3, dtype=np.int64))
    with configure(engine="fused"), pytest.raises(IntegerOverflowError, match="fc2: forward"):
        Trainer(model).step(x, one_hot(np.array([0, 1]), 2))
    assert calls == [1]


def test_unsupported_models_fall_back_to_blas(mnist, monkeypatch):
    """Backprop and other activations run the blas step under 'fused', same bits."""
    monkeypatch.setattr(fused, "dfa_deltas", None)  # any use would fail
    x, y = mnist.train_images[:400], mnist.train_labels[:400]
    assert_same_runs(*(train(e, x, y, [784, 20, 10], "plu") for e in ("blas", "fused")))
    runs = []
    for engine in ("blas", "fused"):
        with configure(engine=engine, overflow="wrap"):
            model = build_mlp([784, 20, 10])
            he_init(model, 1)
            Trainer(model, algorithm="bp", seed=1).fit(x, y, 1)
        runs.append(([(layer.W, layer.b) for layer in model.layers], []))
    assert_same_runs(*runs)


def test_kernels_see_only_integers_and_contain_no_float_instruction(mnist):
    """After real runs, every compiled signature is integer-only, and so is the code."""
    x, y = mnist.train_images[:200], mnist.train_labels[:200]
    train("fused", x, y, [784, 16, 12, 10])
    train("fused", x, y, [784, 16, 12, 10], rounding="stochastic")
    float_ops = re.compile(r"\b(fadd|fsub|fmul|fdiv|frem|fcmp|sitofp|uitofp|fptosi|fptoui)\b")
    checked = 0
    for name, kernel in fused.kernels().items():
        assert kernel.signatures, f"{name} was never compiled"
        for sig in kernel.signatures:
            for arg in sig:
                for dtype in re.findall(r"(?:Array|array)\((\w+)", str(arg)):
                    assert dtype.startswith(("int", "uint")), (name, arg)
                assert "float" not in str(arg), (name, arg)
            fresh = numba.njit(kernel.py_func)  # cached code cannot be inspected: recompile
            fresh.compile(sig)
            assert not float_ops.findall(fresh.inspect_llvm(sig)), name
            checked += 1
    assert checked >= len(fused.kernels())


def test_selecting_fused_without_numba_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "numba" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install 'pocketnn\[fast\]'"):
        with configure(engine="fused"):
            pass
