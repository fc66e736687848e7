"""Tests for on-device training of fixed-point MLPs in the generated C (``--with-training``).

The C must take exactly the steps of pocketnn's Trainer with the ``frontier`` recipe and
truncating rounding: integer backprop through the current weights, the integer softmax
loss, MomentumSGD (velocity, linear schedule, weight decay, clamp), and Python's velocity
check before anything changes. Checked with the real tools: the host build (gcc) against
Python after every step, weights, velocities and step count bit for bit, from the same
starting state; a Cortex-M0 build (no float helper or instruction) under qemu-system-arm;
and the refusals, each one line naming what is not exported.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from test_export_c import (
    checksum_records,
    compile_host,
    compile_strictest,
    mcu_data_header,
    parse_mcu_output,
)

import pocketnn
from pocketnn.cli import main
from pocketnn.core.overflow import IntegerOverflowError
from pocketnn.export import ExportError, export_c, generate_c
from pocketnn.export.footprint import (
    HARNESS_DIR,
    build_firmware,
    find_float_usage,
    harness_defines,
    run_qemu,
    run_tool,
)
from pocketnn.nn.architecture import build
from pocketnn.nn.inputs import InputSpec
from pocketnn.nn.layers import Dense
from pocketnn.train.momentum import MomentumSGD
from pocketnn.train.optimizer import IntegerSGD
from pocketnn.train.rules import Backprop
from pocketnn.train.seeding import fixed_point_init

ARCH = "36-16-8-4"
N_INPUTS, N_CLASSES = 36, 4
BATCH = 8
MODEL_NAME = "fpt"


def biased_mlp():
    """Fixed-point dense layers with bias and their own activation, on raw bytes (no input
    scaling): the other shape of fixed-point MLP the exporter takes."""
    return pocketnn.Sequential(
        [
            Dense(N_INPUTS, 12, "leaky_relu", name="fc1", weight_clamp=4000, frac_bits=8),
            Dense(12, N_CLASSES, "as_is", name="fc2", frac_bits=6),
        ]
    )


def fixed_trainer(seed=1, decay_inv=0, total_steps=12, rule=None, arch=ARCH, model=None, **kw):
    """A small fixed-point MLP built and trained as the ``frontier`` preset does (leaky_relu,
    10 fractional bits, textbook backprop, momentum 3, softmax), rounding truncating."""
    if model is None:
        model = build(arch, (N_INPUTS,), activation="leaky_relu", frac_bits=10)
    fixed_point_init(model, seed)
    optimizer = kw.pop("optimizer", None) or MomentumSGD(
        lr_inv=1 << 12,
        lr_double_every=0,
        rounding="trunc",
        momentum=3,
        total_steps=total_steps,
        decay_inv=decay_inv,
    )
    return pocketnn.Trainer(
        model,
        rule=rule or Backprop(updated_weights=False),
        optimizer=optimizer,
        batch_size=BATCH,
        loss=kw.pop("loss", "softmax"),
        seed=seed,
        **kw,
    )


def random_steps(rng, sizes, lr_invs):
    """(images, labels, lr_inv) per step: bytes with many zeros, as pixels are."""
    steps = []
    for n, lr in zip(sizes, lr_invs):
        x = rng.integers(0, 256, (n, N_INPUTS)) * (rng.random((n, N_INPUTS)) < 0.6)
        steps.append((x.astype(np.uint8), rng.integers(0, N_CLASSES, n), lr))
    return steps


def saved_after_warmup(tmp_path, seed=1, warmup=3, **kw):
    """A model file after ``warmup`` Python steps: non-zero velocities, a started schedule."""
    trainer = fixed_trainer(seed, **kw)
    for x, y, lr in random_steps(np.random.default_rng(seed), [BATCH] * warmup, [1 << 12] * 3):
        trainer.step(x, y, lr_inv=lr)
    path = tmp_path / "fixed.npz"
    trainer.save(path)
    return path


def state(trainer):
    """Every parameter, then every velocity (model-file order), and the step count."""
    layers = [layer for layer in trainer.model.layers if layer.parameters()]
    params = [p.copy() for layer in layers for p in layer.parameters().values()]
    velocity = trainer.optimizer.velocity
    zeros = [np.zeros(p.shape, np.int64) for p in params]
    keys = [f"{layer.name}.{name}" for layer in layers for name in layer.parameters()]
    velocities = [velocity.get(k, z).copy() for k, z in zip(keys, zeros)]
    return params, velocities, trainer.optimizer.steps_done


def python_steps(path, steps):
    """Python's result and state after each step (-1 and the unchanged state on overflow)."""
    trainer = pocketnn.Trainer.load(path)
    trainer.optimizer.rounding = "trunc"  # the device truncates
    out = []
    for x, y, lr in steps:
        before = state(trainer)
        try:
            correct = trainer.step(x, np.asarray(y, np.int64), lr_inv=lr)[1]
        except IntegerOverflowError:
            after = state(trainer)
            for a, b in zip(after[0] + after[1], before[0] + before[1]):
                np.testing.assert_array_equal(a, b)
            assert after[2] == before[2]
            out.append((-1, *after))
            continue
        out.append((correct, *state(trainer)))
    return out


def host_steps(exe, path, steps):
    """The C's results and state after all ``steps``, read from the host driver."""
    params, velocities, _ = state(pocketnn.Trainer.load(path))
    data = b"".join(
        struct.pack("<ii", len(y), lr) + x.tobytes() + np.asarray(y, np.uint8).tobytes()
        for x, y, lr in steps
    )
    out = run_tool([exe, "train"], input=data).stdout
    results = np.frombuffer(out[: 4 * len(steps)], "<i4").tolist()
    offset, arrays = 4 * len(steps), []
    for ref in params + velocities:
        dtype = np.dtype(ref.dtype).newbyteorder("<")
        size = ref.size * dtype.itemsize
        arrays.append(np.frombuffer(out[offset : offset + size], dtype).reshape(ref.shape))
        offset += size
    (steps_done,) = struct.unpack("<q", out[offset:])
    return results, arrays[: len(params)], arrays[len(params) :], steps_done


def compile_training(path, workdir):
    _, source = export_c(path, workdir, MODEL_NAME, with_training=True)
    return compile_host(source, workdir, MODEL_NAME, True, sanitize=True, with_state=True)


def assert_same_steps(exe, path, steps):
    """After every prefix of ``steps``, the C's state is Python's, bit for bit."""
    expected = python_steps(path, steps)
    for k in range(1, len(steps) + 1):
        results, params, velocities, steps_done = host_steps(exe, path, steps[:k])
        assert results == [e[0] for e in expected[:k]]
        py_params, py_velocities, py_steps = expected[k - 1][1:]
        for i, (c, py) in enumerate(zip(params + velocities, py_params + py_velocities)):
            np.testing.assert_array_equal(c, py, err_msg=f"after step {k}, array {i}")
        assert steps_done == py_steps
    return expected


# --------------------------------------------------------------------------- host, bit-exact


@pytest.mark.gcc
@pytest.mark.parametrize("decay_inv", [0, 1 << 20])
def test_host_training_steps_match_python_bit_for_bit(tmp_path, decay_inv):
    path = saved_after_warmup(tmp_path, decay_inv=decay_inv)
    exe = compile_training(path, tmp_path / "c")
    rng = np.random.default_rng(7)
    # full and partial batches; lr_inv 1 moves weights far enough to hit the clamp; the
    # schedule runs past its 12 planned steps, where the step size stays the last one
    steps = random_steps(rng, [8, 5, 8, 1, 8, 8, 8, 8, 8, 3], [4096, 4096, 1, 4096] + [512] * 6)
    expected = assert_same_steps(exe, path, steps)
    params = expected[-1][1]
    assert any(np.abs(p).max() == 32767 for p in params)  # the clamp was reached
    assert expected[-1][3] == 3 + len(steps) > 12  # beyond the schedule
    first = pocketnn.Trainer.load(path)
    moved = [not np.array_equal(a, b) for a, b in zip(state(first)[0], params)]
    assert all(moved)
    text = (tmp_path / "c" / f"{MODEL_NAME}.c").read_text()
    assert ("/ FPT_DECAY_INV" in text) == bool(decay_inv)


@pytest.mark.gcc
def test_dense_layers_with_bias_and_their_own_activation_train_as_in_python(tmp_path):
    path = saved_after_warmup(tmp_path, seed=9, model=biased_mlp())
    assert "velocity/fc1.b" in pocketnn.load_checkpoint(path)[2]
    exe = compile_training(path, tmp_path / "c")
    steps = random_steps(np.random.default_rng(9), [8, 6, 8, 8], [4096, 256, 64, 4096])
    expected = assert_same_steps(exe, path, steps)
    biases = expected[-1][1][1::2]
    assert all(b.any() for b in biases)  # the biases learn, in C as in Python
    text = (tmp_path / "c" / f"{MODEL_NAME}.c").read_text()
    assert "fc1_value_b(" in text and "fc1_g[j] = g;" in text


@pytest.mark.gcc
def test_a_failing_velocity_check_changes_nothing_in_c_as_in_python(tmp_path):
    trainer = fixed_trainer(seed=2)
    x, y, lr = random_steps(np.random.default_rng(2), [BATCH], [4096])[0]
    trainer.step(x, y, lr_inv=lr)
    trainer.optimizer.velocity["fc2.W"][3, 1] = 2**63 - 5  # |v| + |g| leaves int64
    path = tmp_path / "edge.npz"
    trainer.save(path)
    exe = compile_training(path, tmp_path / "c")
    steps = random_steps(np.random.default_rng(3), [BATCH, 4], [4096, 4096])
    expected = assert_same_steps(exe, path, steps)
    assert [e[0] for e in expected] == [-1, -1]  # NAME_ERR_OVERFLOW, Python's raise
    assert expected[-1][3] == 1  # no step was counted


@pytest.mark.gcc
def test_bad_arguments_return_their_error_codes_and_change_nothing(tmp_path):
    path = saved_after_warmup(tmp_path, seed=4)
    exe = compile_training(path, tmp_path / "c")
    good = random_steps(np.random.default_rng(4), [BATCH], [4096])[0]
    x, y, _ = good
    bad_label = y.copy()
    bad_label[2] = N_CLASSES
    bad = [(x[:0], y[:0], 4096), (x, bad_label, 4096), (x, y, 0), (x, y, -3)]
    results, params, velocities, steps_done = host_steps(exe, path, bad)
    assert results == [-2, -3, -4, -4]
    start = state(pocketnn.Trainer.load(path))
    for c, py in zip(params + velocities, start[0] + start[1]):
        np.testing.assert_array_equal(c, py)
    assert steps_done == start[2] == 3
    assert host_steps(exe, path, [*bad, good])[0][-1] == python_steps(path, [good])[0][0]


def test_generated_training_code_is_strict_integer_c99(tmp_path):
    path = saved_after_warmup(tmp_path, seed=5)
    header, source = export_c(path, tmp_path, "tiny", with_training=True)
    h, c = header.read_text(), source.read_text()
    for symbol in (
        "TINY_MAX_BATCH 8",
        "TINY_MOMENTUM 3",
        "TINY_TOTAL_STEPS 12",
        "extern int64_t tiny_fc1_W_velocity[TINY_FC1_N_IN][TINY_FC1_N_OUT];",
        "extern int64_t tiny_steps_done;",
        "int tiny_train_step(",
        'rounding="trunc"',
    ):
        assert symbol in h
    assert "int64_t tiny_steps_done = 3;" in c
    assert "extern int16_t tiny_fc1_W" in h  # in RAM: not const
    for text in (h, c):
        code = "".join(part.split("*/")[-1] for part in text.split("/*"))
        for word in ("float", "double", "malloc", "math.h"):
            assert word not in code
    compile_strictest(source, tmp_path / "tiny.o")


# --------------------------------------------------------------------------- Cortex-M0


@pytest.mark.arm
def test_cortex_m0_training_is_integer_only_and_matches_python(tmp_path):
    path = saved_after_warmup(tmp_path, seed=6)
    rng = np.random.default_rng(6)
    steps = random_steps(rng, [BATCH] * 4, [2048] * 4)
    test_images = random_steps(rng, [20], [1])[0][0]
    mcu_data_header(tmp_path / "mcu_data.h", test_images, steps, n_after=20)
    _, source = export_c(path, tmp_path, MODEL_NAME, with_training=True)
    elf = build_firmware(
        [source],
        [HARNESS_DIR / "mcu_main.c", HARNESS_DIR / "runtime.c"],
        tmp_path / "mcu.elf",
        [tmp_path],
        harness_defines(MODEL_NAME, True, with_state=True),
    )
    assert find_float_usage(elf) == []
    assert find_float_usage(elf.with_suffix(".obj") / f"{MODEL_NAME}.o") == []
    out = parse_mcu_output(run_qemu(elf, timeout=120))
    start = pocketnn.Trainer.load(path).model
    expected = np.column_stack([start.predict(test_images), start.scores(test_images)])
    np.testing.assert_array_equal(np.array(out["S"]), expected)
    after = python_steps(path, steps)
    assert [r[0] for r in out["T"]] == [a[0] for a in after]
    _, params, velocities, steps_done = after[-1]
    assert out["P"] == checksum_records(params + velocities)
    assert out["N"] == [[steps_done]]
    trained = pocketnn.Trainer.load(path)
    for x, y, lr in steps:
        trained.step(x, y, lr_inv=lr)
    expected = np.column_stack(
        [trained.model.predict(test_images), trained.model.scores(test_images)]
    )
    np.testing.assert_array_equal(np.array(out["A"]), expected)


# --------------------------------------------------------------------------- refusals


def test_cnn_training_is_refused_in_one_line(tmp_path, capsys):
    model = build("c4k3-p2-10", (1, 8, 8), activation="leaky_relu", frac_bits=10)
    path = tmp_path / "cnn.npz"
    pocketnn.save(path, model)
    assert main(["export-c", str(path), "--out", str(tmp_path / "c"), "--with-training"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "exports MLPs of Dense and Activation layers only" in err and "Conv2D" in err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: fixed_trainer(rule="dfa"), "algorithm is 'dfa'"),
        (lambda: fixed_trainer(rule=Backprop(updated_weights=True)), "bp_updated_weights"),
        (lambda: fixed_trainer(loss="l2"), "loss is 'l2'"),
        (
            lambda: fixed_trainer(optimizer=IntegerSGD(lr_inv=4096, lr_double_every=0)),
            "optimizer is 'sgd'",
        ),
    ],
)
def test_training_rules_the_c_does_not_implement_are_refused(tmp_path, make, message):
    path = tmp_path / "m.npz"
    make().save(path)
    with pytest.raises(ExportError, match=message):
        generate_c(path, "m", with_training=True)


def test_a_fixed_point_model_without_training_state_is_refused(tmp_path):
    model = fixed_trainer().model
    with pytest.raises(ExportError, match="needs its training state"):
        generate_c(model, "m", with_training=True)
    path = tmp_path / "bare.npz"
    pocketnn.save(path, model)
    with pytest.raises(ExportError, match="needs its training state"):
        generate_c(path, "m", with_training=True)


def test_a_batch_whose_gradients_could_leave_int64_is_refused(tmp_path):
    # each hidden layer of 100 multiplies the error bound by 100 * 32767 / 2**10
    path = tmp_path / "deep.npz"
    fixed_trainer(arch="36-100-100-100-4").save(path)
    assert "fpt_train_step" in generate_c(path, "fpt", with_training=True)["fpt.h"]
    with pytest.raises(ExportError, match=r"fc1: a.T @ delta could reach .* --max-batch"):
        generate_c(path, "m", with_training=True, max_batch=32767)


def test_a_fixed_point_model_of_wider_inputs_is_refused(tmp_path):
    """The stages' intervals start from bytes: other inputs are refused, not mis-proven."""
    trainer = fixed_trainer()
    path = tmp_path / "int16.npz"
    settings, arrays = trainer.state()
    pocketnn.save(path, trainer.model, settings, arrays, InputSpec("int16", (N_INPUTS,)))
    for with_training in (False, True):
        with pytest.raises(ExportError, match="uint8 inputs only; this one takes int16"):
            generate_c(path, "m", with_training=with_training)
