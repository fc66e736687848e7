"""What is particular to the ``fused`` engine: its division, its kernels, its fallbacks.

Its bits are checked against the reference engine by ``test_conformance.py``; here: the
magic-number division is C's, the kernels really run, a failure inside them writes
nothing, unsupported configurations fall back, and the compiled code only ever saw integer
arrays and contains no floating-point instruction.
"""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

numba = pytest.importorskip("numba")
pytestmark = pytest.mark.numba

from pocketnn import IntegerOverflowError, Trainer, build_mlp, configure  # noqa: E402
from pocketnn.engines import fused  # noqa: E402
from pocketnn.nn.layers import Dense  # noqa: E402
from pocketnn.nn.model import Sequential  # noqa: E402
from pocketnn.train.seeding import he_init  # noqa: E402

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


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls of the fused step's main kernel."""
    seen = []
    kernel = fused.dfa_deltas
    monkeypatch.setattr(fused, "dfa_deltas", lambda *a: seen.append(1) or kernel(*a))
    return seen


def test_the_kernels_run_every_step_of_supported_configurations(mnist, calls):
    """The conformance suite proves the bits; this proves they came from the kernels."""
    x, y = mnist.train_images[:600], mnist.train_labels[:600]
    train("fused", x, y, [784, 30, 20, 10], batch_size=20)
    train("fused", x, y, [784, 30, 10], "pocket_relu8bit", rounding="stochastic", batch_size=7)
    assert len(calls) == 600 // 20 + -(-600 // 7)


def test_a_failing_kernel_step_writes_nothing(calls):
    """An overflow found inside the kernel is raised before any parameter is written."""
    model = Sequential(
        [Dense(n, m, name=f"fc{i}", weight_clamp=2**31 - 1) for i, n, m in ((1, 4, 3), (2, 3, 2))]
    )
    model.layers[0].set_params(np.full((4, 3), 3), np.zeros(3, dtype=np.int64))
    model.layers[1].set_params(np.full((3, 2), 2**20), np.zeros(2, dtype=np.int64))
    before = [p.copy() for layer in model.layers for p in (layer.W, layer.b)]
    trainer = Trainer(model, feedback=[np.full((2, 3), 2**30, np.int32)], engine="fused")
    with pytest.raises(IntegerOverflowError, match="fc1: feedback e @ B"):
        trainer.step(np.full((2, 4), 255, dtype=np.uint8), np.array([0, 1]))
    assert calls == [1]
    after = [p for layer in model.layers for p in (layer.W, layer.b)]
    assert all(np.array_equal(a, b) for a, b in zip(after, before))


def test_an_overflow_names_the_layer(calls):
    model = Sequential(
        [Dense(n, m, name=f"fc{i}", weight_clamp=2**31 - 1) for i, n, m in ((1, 4, 3), (2, 3, 2))]
    )
    model.layers[1].set_params(np.full((3, 2), 2**30), np.zeros(2, dtype=np.int64))
    x = np.full((2, 4), 255, dtype=np.uint8)
    model.layers[0].set_params(np.full((4, 3), 32767), np.zeros(3, dtype=np.int64))
    with configure(engine="fused"), pytest.raises(IntegerOverflowError, match="fc2: forward"):
        Trainer(model).step(x, np.array([0, 1]))
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
            Trainer(model, rule="bp", seed=1).fit(x, y, 1)
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
    from pocketnn.core import context

    monkeypatch.setattr(context, "HAS_NUMBA", False)
    with pytest.raises(ImportError, match=r"pip install 'pocketnn\[fast\]'"):
        with configure(engine="fused"):
            pass
