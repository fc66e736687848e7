"""What is particular to the ``compiled`` engine: its build, its integer-only code, whole
epochs in one call, threads, every vector path, and failures inside an epoch.

Its bits are checked against the reference engine by ``test_conformance.py``; here: the
library is built once and cached, contains no floating-point instruction, gives the same
bits when built for other vector units and on any number of threads, runs an epoch
without a Python step, and fails mid-epoch exactly like the layered loop.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import threading

import numpy as np
import pytest

from pocketnn import IntegerOverflowError, Trainer, build_mlp, configure
from pocketnn.engines.compiled import build, runner
from pocketnn.nn.layers import Dense
from pocketnn.nn.losses import one_hot
from pocketnn.nn.model import Sequential
from pocketnn.train.optimizer import IntegerSGD

pytestmark = pytest.mark.gcc
X86 = platform.machine() in ("x86_64", "AMD64")
VARIANTS = [
    ("avx512-no-vnni", ("-march=skylake-avx512",)),
    ("avx2", ("-march=x86-64-v3",)),
    ("sse2", ("-march=x86-64",)),
]
"""Other x86 builds of the kernels: each takes other code paths than this machine's."""
PORTABLE = ("portable", ("-march=x86-64", "-mno-sse2"))
"""A build without x86 vector instructions: the matrix product's portable C (the vector
extension code that other processors, e.g. ARM, compile)."""
FLOAT_MNEMONIC = re.compile(
    r"^(?:v?(?:add|sub|mul|div|min|max|sqrt|rcp14|rsqrt14|rcp|rsqrt|round|rndscale|cmp|comi|ucomi"
    r"|hadd|hsub|dp|dpbf16|getexp|getmant|scalef|range|reduce|fixupimm|fpclass)"
    r"(?:ps|pd|ss|sd|ph|sh)|v?f(?:n?m(?:add|sub)|maddsub|msubadd)\w*|v?cvt\w*|f[a-z0-9]*)$"
)
"""x86 instructions that compute on floating-point values: SSE/AVX arithmetic, comparisons
and conversions on ps/pd/ss/sd/ph/sh, FMA, and every x87 instruction (f...). Moves,
shuffles and bitwise operations move bits without computing on them."""


def float_instructions(library) -> list[str]:
    """The floating-point instructions in a shared library's code, as ``objdump`` shows them."""
    out = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(library)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and re.match(r"\s*[0-9a-f]+:$", parts[0]):
            mnemonic = parts[1].split()[0] if parts[1].split() else ""
            if FLOAT_MNEMONIC.match(mnemonic) and not mnemonic.startswith(("fs", "fxs", "fn")):
                found.append(line.strip())
    return found


def variant(tmp_path, name: str, flags: tuple[str, ...]):
    """The kernels built with other flags, loaded."""
    path = tmp_path / f"{name}.so"
    build.compile_library(path, build.FLAGS + flags)
    return build.load(path)


def train(x, y, dims=(784, 40, 20, 10), threads=1, epochs=1, **kwargs):
    model = build_mlp(list(dims))
    trainer = Trainer(model, seed=4, **kwargs)
    with configure(engine="compiled", threads=threads):
        history = trainer.fit(x, y, epochs)
        scores = model.scores(x[:700], batch_size=128)
    params = [p.copy() for layer in model.layers for p in (layer.W, layer.b)]
    return params, [(r.loss, r.train_correct) for r in history], scores


def assert_same(a, b):
    (pa, ha, sa), (pb, hb, sb) = a, b
    assert ha == hb
    assert np.array_equal(sa, sb)
    assert all(p.dtype == q.dtype and np.array_equal(p, q) for p, q in zip(pa, pb))


@pytest.mark.skipif(not X86, reason="x86 disassembly")
@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
def test_the_kernels_contain_no_floating_point_instruction(tmp_path):
    """The built library, and its portable variants, compute with integer instructions only;
    the check finds the instructions of a snippet that does use floating point."""
    snippet = tmp_path / "float.c"
    snippet.write_text("double scale(double a, long b) { return a * (double)b + 0.5; }\n")
    subprocess.run(
        [build.c_compiler(), "-O2", "-shared", "-fPIC", "-o", tmp_path / "f.so", snippet],
        check=True,
    )
    assert float_instructions(tmp_path / "f.so")  # the checker is not blind
    libraries = [build.build()]
    for name, flags in [*VARIANTS, PORTABLE]:
        variant(tmp_path, name, flags)
        libraries.append(tmp_path / f"{name}.so")
    for lib in libraries:
        assert float_instructions(lib) == [], lib


@pytest.mark.skipif(not X86, reason="x86 vector units")
@pytest.mark.parametrize("flags", [flags for _, flags in VARIANTS], ids=[n for n, _ in VARIANTS])
def test_every_vector_path_gives_the_same_bits(mnist, tmp_path, monkeypatch, flags):
    """Built for other vector units (AVX-512 without VNNI: vpmaddwd instead of vpdpwssd;
    without AVX-512: the generic vector code instead of the paired int16 lanes), the
    kernels compute the same integers, for both roundings and for signed input."""
    x, y = mnist.train_images[:1200], mnist.train_labels[:1200]
    runs = {}
    for name in ("native", "variant"):
        if name == "variant":
            lib = variant(tmp_path, "v", flags)
            monkeypatch.setattr(runner, "library", lambda lib=lib: lib)
        runs[name] = [
            train(x, y, rounding="stochastic"),
            train(x, y, batch_size=7),
            train(x.astype(np.int16) - 128, y, dims=(784, 24, 10)),
        ]
    for a, b in zip(runs["native"], runs["variant"]):
        assert_same(a, b)


def product_cases():
    """Operands of the exact product as training makes them (convolution and dense shapes,
    8/16-bit activations and columns, int16 weights, int64 deltas, in their own layouts:
    cols.T and W.T are transposed views), each lane kind, odd shared sizes, more terms than
    one C chunk, edges of the row blocks and panels, strided and reversed views."""
    rng = np.random.default_rng(5)
    cols = rng.integers(-128, 128, (301, 27)).astype(np.int8)
    pixels = rng.integers(0, 256, (37, 1100)).astype(np.uint8)
    w = rng.integers(-32767, 32768, (27, 33)).astype(np.int16)
    delta = rng.integers(-(2**14), 2**14, (301, 33))
    return [
        (cols, w),  # int16 pairs, one chunk
        (cols.T, delta),  # int64 deltas narrowed to int16, cols.T read in place
        (delta, w.T),  # pairs, W.T read in place
        (pixels, rng.integers(-32767, 32768, (1100, 70)).astype(np.int16)),  # 257-term chunks
        (cols, (w.astype(np.int64) * 5)[:, ::-1]),  # values past int16: int32 lanes
        (delta * 8, w.T),  # deltas of 2**17: int64 lanes
        (rng.integers(-(2**31) + 1, 2**31, (13, 9)), rng.integers(-3, 4, (9, 45))),  # int64 lanes
        (cols[::3, ::2], w[::2, 1::3]),  # strided views
        (cols[:, :0], w[:0]),  # no terms: zeros
        (cols[:0], w),  # no rows
    ]


@pytest.mark.skipif(not X86, reason="x86 vector units")
@pytest.mark.parametrize(
    "flags", [f for _, f in VARIANTS] + [PORTABLE[1]], ids=[n for n, _ in VARIANTS] + ["portable"]
)
def test_every_vector_build_multiplies_exactly(tmp_path, monkeypatch, flags):
    """The exact product built for other vector units (AVX-512 without VNNI: vpmaddwd;
    AVX2; SSE2; no vector instructions at all) gives numpy's int64 product, through every
    lane kind."""
    from pocketnn.core.products import exact_matmul
    from pocketnn.engines.compiled import gemm

    lib = variant(tmp_path, "v", flags)
    monkeypatch.setattr(gemm, "library", lambda: lib)
    kinds, real = set(), lib.pnn_matmul
    monkeypatch.setattr(lib, "pnn_matmul", lambda *args: kinds.add(args[11]) or real(*args))
    for a, b in product_cases():
        with configure(engine="compiled"):
            got, _ = exact_matmul(a, b)
        assert np.array_equal(got, a.astype(np.int64) @ b.astype(np.int64))
    assert kinds == {gemm.PAIRS, gemm.WORDS, gemm.WIDE}


def test_a_product_gives_the_same_bits_on_any_thread_count():
    """Split over threads by row blocks (products of at least 2**22 terms), or called from
    several threads at once, each with its own work buffer: the same integers."""
    from pocketnn.core.products import exact_matmul

    rng = np.random.default_rng(6)
    cols = rng.integers(-128, 128, (1500, 144)).astype(np.int8)
    delta = rng.integers(-(2**17), 2**17, (1500, 32))
    w = rng.integers(-3000, 3000, (144, 32)).astype(np.int16)
    pairs = [(cols, w), (cols.T, delta), (delta, w.T), (cols.T, delta // 16)]
    want = [a.astype(np.int64) @ b.astype(np.int64) for a, b in pairs]
    for threads in (1, 2, 3, 8):
        with configure(engine="compiled", threads=threads):
            assert all(np.array_equal(exact_matmul(a, b)[0], z) for (a, b), z in zip(pairs, want))
    results, barrier = {}, threading.Barrier(6)

    def job(i):
        barrier.wait()
        with configure(engine="compiled", threads=1 + i % 3):
            results[i] = [exact_matmul(*pairs[(i + j) % 4])[0] for j in range(8)]

    pool = [threading.Thread(target=job, args=(i,)) for i in range(6)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    for i, got in results.items():
        assert all(np.array_equal(g, want[(i + j) % 4]) for j, g in enumerate(got))
    assert len(results) == 6


def test_any_thread_count_gives_the_same_bits(mnist):
    x, y = mnist.train_images[:3000], mnist.train_labels[:3000]
    for kwargs in ({}, {"rounding": "stochastic", "batch_size": 33}):
        alone = train(x, y, (784, 200, 100, 50, 10), **kwargs)
        for threads in (2, 3, 8):
            assert_same(alone, train(x, y, (784, 200, 100, 50, 10), threads=threads, **kwargs))


def test_a_whole_epoch_is_one_call(mnist, monkeypatch):
    """No Python per step: one kernel call per epoch, no layered step; with a progress
    callback, a call per piece of the epoch, and the callback sees every piece."""
    calls = []
    real = runner._Setup.call
    monkeypatch.setattr(runner._Setup, "call", lambda self, *a: calls.append(1) or real(self, *a))
    monkeypatch.setattr(Trainer, "_layered_step", None)  # any use would fail
    x, y = mnist.train_images[:6000], mnist.train_labels[:6000]
    train(x, y, epochs=2)
    assert len(calls) == 2
    calls.clear()
    seen = []
    with configure(engine="compiled"):
        Trainer(build_mlp([784, 30, 10])).train_epoch(x, y, lambda d, t: seen.append((d, t)))
    assert len(calls) == len(seen) and runner.PROGRESS_PIECES / 2 < len(seen) <= 64
    assert seen[-1] == (300, 300)
    assert seen == sorted(seen)


def test_the_draws_of_a_piece_are_the_optimizer_draws_in_order():
    """One draw of a whole piece equals the optimizer's draws parameter after parameter, in
    its update dtypes: the stream is consumed identically (numpy draws 32-bit values for
    ranges below 2**32 whatever the dtype)."""
    sizes = [3 * 7, 7, 7 * 5, 5, 2 * 7, 7]
    for lr_inv, dtypes in ((1000, [np.int32]), (1, [np.int64]), (2**31 - 1, [np.int32, np.int64])):
        a, b = np.random.default_rng([9, lr_inv]), np.random.default_rng([9, lr_inv])
        one = IntegerSGD.draws(a, (sum(sizes),), lr_inv, np.int32)
        parts = [
            IntegerSGD.draws(b, (n,), lr_inv, dtypes[i % len(dtypes)]) for i, n in enumerate(sizes)
        ]
        assert np.array_equal(one, np.concatenate(parts))
        assert a.bit_generator.state == b.bit_generator.state


def failing_epoch(engine: str, rounding: str, wide: bool):
    """An epoch whose 7th step overflows fc1's forward: one sample lights every pixel."""
    rng = np.random.default_rng(3)
    clamp = 2**31 - 1 if wide else 32767
    model = Sequential(
        [
            Dense(300, 24, name="fc1", weight_clamp=clamp),
            Dense(24, 12, "pocket_sigmoid", name="fc2", weight_clamp=clamp),
            Dense(12, 10, name="fc3", weight_clamp=clamp),
        ]
    )
    weight = 2**24 if wide else 32767
    model.layers[0].set_params(np.full((300, 24), weight), np.zeros(24, dtype=np.int64))
    x = np.zeros((200, 300), dtype=np.uint8)
    x[:, :4] = rng.integers(0, 2, (200, 4))  # |z| <= 4 * weight: fits int32
    x[130] = 255  # 300 * 255 * weight: does not
    y = rng.integers(0, 10, 200)
    trainer = Trainer(model, seed=2, rounding=rounding, engine=engine)
    with pytest.raises(IntegerOverflowError) as err:
        trainer.train_epoch(x, y)
    params = [p.copy() for layer in model.layers for p in (layer.W, layer.b)]
    rng_state = trainer.optimizer.rounding_stream(1)
    return str(err.value), params, None if rng_state is None else rng_state.bit_generator.state


@pytest.mark.parametrize("wide", [False, True], ids=["int16", "int32"])
@pytest.mark.parametrize("rounding", ["trunc", "stochastic"])
def test_a_failing_step_in_an_epoch_keeps_the_steps_before_it(rounding, wide):
    """As the layered loop: the steps before the failing one are kept, the failing one
    writes nothing and draws nothing, and the same error names the layer."""
    message, params, state = failing_epoch("compiled", rounding, wide)
    ref_message, ref_params, ref_state = failing_epoch("int", rounding, wide)
    assert message == ref_message and message.startswith("fc1: forward a @ W + b: value")
    assert all(np.array_equal(p, q) for p, q in zip(params, ref_params))
    assert state == ref_state
    assert np.count_nonzero(params[2])  # steps 1-6 did train


def int16_case(seed: int):
    """A net with int16 weights, uint8 input and targets of random scales: every check of
    the int16 paths (int32 lanes, int16 deltas or not, exact gradients or not) fails in some
    case and passes in others."""
    rng = np.random.default_rng(seed)
    model = build_mlp([400, 24, 12, 10])
    for layer in model.layers:
        scale = 2 ** int(rng.integers(4, 16))
        layer.set_params(
            rng.integers(1 - scale, scale, layer.W.shape),
            rng.integers(1 - scale, scale, layer.b.shape),
        )
    n = int(rng.integers(1, 60))
    x = rng.integers(0, 256, (n, 400)).astype(np.uint8)
    x[:, rng.integers(0, 400, 160)] = 0
    x[rng.random((n, 400)) < rng.random()] = 0
    if seed % 4 == 0:  # saturated rows and weights: the forward leaves int32
        model.layers[0].set_params(32767 - rng.integers(0, 99, (400, 24)), model.layers[0].b)
        x[rng.integers(0, n, 2)] = 255
    targets = one_hot(rng.integers(0, 10, n), 10, 2 ** int(rng.integers(0, 24)))
    feedback = [rng.integers(-(2**14), 2**14, (10, w)).astype(np.int32) for w in (24, 12)]
    return model, feedback, x, targets, int(rng.integers(1, 5000))


@pytest.mark.parametrize("overflow", ["raise", "wrap"])
def test_the_int16_paths_fail_and_wrap_like_the_reference(overflow):
    outcomes = set()
    for seed in range(120):
        results = []
        for engine in ("compiled", "int"):
            model, feedback, x, targets, lr_inv = int16_case(seed)
            trainer = Trainer(
                model,
                feedback=feedback,
                lr_inv=lr_inv,
                rounding="stochastic" if seed % 2 else "trunc",
                engine=engine,
                overflow=overflow,
            )
            try:
                out = trainer.step(x, targets=targets)
            except IntegerOverflowError as exc:
                out = str(exc).split(": value")[0]
            results.append((out, [p.copy() for layer in model.layers for p in (layer.W, layer.b)]))
        (out, params), (ref_out, ref_params) = results
        assert out == ref_out, seed
        assert all(np.array_equal(p, q) for p, q in zip(params, ref_params)), seed
        outcomes.add(out if isinstance(out, str) else "ok")
    if overflow == "raise":
        assert {"ok", "fc1: forward a @ W + b", "fc1: update a.T @ delta"} <= outcomes, outcomes
    else:
        assert outcomes == {"ok"}


def test_a_test_pass_fails_at_the_first_chunk_and_layer_like_the_reference(mnist):
    model = build_mlp([784, 30, 10])
    model.layers[0].set_params(np.full((784, 30), 32767), np.zeros(30, dtype=np.int64))
    x = np.minimum(mnist.test_images[:2000], 1)  # 784 * 32767 at most: fits int32
    x[1200:1300] = 255  # chunk 2 of 500 rows does not (and chunk 3 would not either)
    x[1700:] = 255
    errors = []
    for engine in ("compiled", "int"):
        with configure(engine=engine), pytest.raises(IntegerOverflowError) as err:
            model.scores(x, batch_size=500)
        errors.append(str(err.value))
        with configure(engine=engine, overflow="wrap", threads=2):
            errors.append(model.scores(x, batch_size=500).tolist())
    assert errors[0] == errors[2] and errors[0].startswith("fc1: forward")
    assert errors[1] == errors[3]


def test_the_kernels_are_built_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("POCKETNN_KERNELS", str(tmp_path / "cache"))
    assert build.cached_library() is None
    path = build.build()
    assert path.parent == tmp_path / "cache" and build.cached_library() == path
    assert not list(path.parent.glob("*.part"))  # written through a temporary file

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(build.subprocess, "run", no_compiler)
    assert build.build() == path
    assert build.load(path).pnn_abi() == build.ABI


def test_a_broken_compiler_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("POCKETNN_KERNELS", str(tmp_path))
    monkeypatch.setenv("CC", shutil.which("false"))
    with pytest.raises(build.BuildError, match="cannot build the compiled engine's kernels"):
        build.build()
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_selecting_compiled_without_compiler_or_kernels_says_how(tmp_path, monkeypatch):
    from pocketnn.core import context

    monkeypatch.setattr(context, "HAS_C_COMPILER", False)
    monkeypatch.setenv("POCKETNN_KERNELS", str(tmp_path))
    with pytest.raises(ImportError, match="needs a C compiler"):
        with configure(engine="compiled"):
            pass


def test_the_thread_count_is_a_command_line_setting(capsys):
    from pocketnn.cli import main

    assert main(["--threads", "0", "info", "missing.npz"]) == 2
    assert "threads must be an integer in [1, 8], got 0" in capsys.readouterr().err


def test_augmented_and_normalised_runs_give_the_reference_bits(mnist):
    """Under augmentation the epoch runs step by step (each batch is shifted first), and
    with grad_bits the layered step runs: both as the reference engine computes them."""
    from pocketnn.train.augment import Augment

    x, y = mnist.train_images[:600], mnist.train_labels[:600]
    runs = []
    for engine in ("compiled", "int"):
        got = []
        for kwargs in ({"augment": Augment((1, 28, 28), shift=2)}, {"grad_bits": 12}):
            model = build_mlp([784, 20, 10])
            trainer = Trainer(model, seed=3, engine=engine, **kwargs)
            got.append(([r.loss for r in trainer.fit(x, y, 1)], model.layers[0].W.copy()))
        runs.append(got)
    for (loss, w), (ref_loss, ref_w) in zip(*runs):
        assert loss == ref_loss and np.array_equal(w, ref_w)
