"""Tests for pocketnn.export: generated C, bit-exact with Python, on the host and on a Cortex-M0.

Everything runs the real tools: gcc for the host build, arm-none-eabi-gcc/nm/objdump/size
for the ARMv6-M build and qemu-system-arm for the emulated board. A missing tool fails the
test with the package to install (.ci/install-arm.sh installs them all); nothing is mocked.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import pocketnn
from pocketnn.core.overflow import IntegerOverflowError
from pocketnn.export import ExportError, export_c, footprint_report, generate_c
from pocketnn.export.c import ACTIVATIONS, c_array
from pocketnn.export.footprint import (
    HARNESS_DIR,
    STRICT_FLAGS,
    build_firmware,
    find_float_usage,
    harness_defines,
    require_tool,
    run_qemu,
    run_tool,
)
from pocketnn.nn.losses import one_hot
from pocketnn.train.rules import random_feedback

SUPPORTED = list(ACTIVATIONS)
PICO_SRAM = 264 * 1024
PICO_FLASH_GOAL = 256 * 1024
INFERENCE_RAM_GOAL = 8 * 1024
EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "mcu_firmware"


# --------------------------------------------------------------------------- helpers


def random_model(dims, activation, rng, scale=300, output_activation=None):
    model = pocketnn.build_mlp(dims, activation, output_activation)
    for layer in model.layers:
        layer.set_params(
            rng.integers(-scale, scale + 1, layer.W.shape),
            rng.integers(-scale, scale + 1, layer.b.shape),
        )
    return model


def copy_model(model):
    clone = pocketnn.Sequential.from_config(model.config())
    for src, dst in zip(model.layers, clone.layers):
        dst.set_params(src.W.copy(), src.b.copy())
    return clone


def build_host(
    model, workdir, name="model", with_training=False, feedback=None, max_batch=None, sanitize=False
):
    """Generate C for ``model`` and build the host driver around it (strict C99 flags)."""
    workdir.mkdir(parents=True, exist_ok=True)
    _, source = export_c(model, workdir, name, with_training, feedback, max_batch)
    return compile_host(source, workdir, name, with_training, sanitize)


def compile_host(
    source, workdir, name="model", with_training=False, sanitize=False, with_state=False
):
    """Build the host driver around the generated ``source`` (strict C99 flags)."""
    exe = workdir / "host"
    flags = ["-fsanitize=undefined", "-fno-sanitize-recover=all"] if sanitize else []
    objs = []
    for src, strict in ((source, True), (HARNESS_DIR / "host_main.c", False)):
        obj = workdir / (Path(src).stem + ".o")
        std = STRICT_FLAGS if strict else ("-std=c99", "-Wall", "-Wextra", "-Werror")
        run_tool(
            [
                "gcc",
                "-O2",
                *std,
                *flags,
                f"-I{workdir}",
                f"-I{HARNESS_DIR}",
                *harness_defines(name, with_training, with_state),
                "-c",
                src,
                "-o",
                obj,
            ]
        )
        objs.append(obj)
    run_tool(["gcc", *flags, *objs, "-o", exe])
    return exe


def compile_strictest(source, obj):
    """Compile generated C on its own with the strictest flags, -Wconversion included."""
    warnings = ("-Wconversion", "-Wshadow", "-Wstrict-prototypes", "-Wmissing-prototypes")
    run_tool(["gcc", *STRICT_FLAGS, *warnings, "-c", source, "-o", obj])


def host_predict(exe, images, n_classes, input_type="uint8"):
    """Scores (N, n_classes) and NAME_predict results (N,) from the host build, the inputs
    sent as the generated code's ``NAME_input_t``."""
    images = np.ascontiguousarray(images, dtype=np.dtype(input_type).newbyteorder("="))
    out = run_tool([exe, "predict"], input=images.tobytes()).stdout
    table = np.frombuffer(out, dtype="<i4").reshape(len(images), n_classes + 1)
    return table[:, :-1].astype(np.int64), table[:, -1].astype(np.int64)


def host_train(exe, model, steps, input_type="uint8"):
    """Run ``steps`` = [(images, labels, lr_inv), ...] in C: results and every parameter."""
    data = b"".join(
        struct.pack("<ii", len(labels), lr)
        + np.ascontiguousarray(x, np.dtype(input_type).newbyteorder("=")).tobytes()
        + np.asarray(labels, np.uint8).tobytes()
        for x, labels, lr in steps
    )
    out = run_tool([exe, "train"], input=data).stdout
    results = np.frombuffer(out[: 4 * len(steps)], dtype="<i4").tolist()
    params, offset = [], 4 * len(steps)
    for layer in model.layers:
        for ref in (layer.W, layer.b.reshape(-1)):
            dtype = np.dtype(ref.dtype).newbyteorder("<")
            size = ref.size * dtype.itemsize
            params.append(np.frombuffer(out[offset : offset + size], dtype).reshape(ref.shape))
            offset += size
    assert offset == len(out)
    return results, params


def python_train(model, feedback, steps):
    """The same steps in Python: results (correct counts) and every parameter.

    A step where Python raises IntegerOverflowError gets the result -1 (NAME_ERR_OVERFLOW)
    and ends the run. Steps are transactional in both: the failed step changed no parameter.
    """
    trainer = pocketnn.Trainer(model, rule="dfa", feedback=feedback)
    results = []
    for x, labels, lr in steps:
        before = [p.copy() for layer in model.layers for p in (layer.W, layer.b)]
        try:
            results.append(trainer.step(x, np.asarray(labels, np.int64), lr_inv=lr)[1])
        except IntegerOverflowError:
            after = [p for layer in model.layers for p in (layer.W, layer.b)]
            assert all(np.array_equal(a, b) for a, b in zip(after, before))
            return results + [-1], after
    return results, [p for layer in model.layers for p in (layer.W, layer.b)]


def initial_params(model):
    return [p.copy() for layer in model.layers for p in (layer.W, layer.b)]


def assert_params_equal(c_params, py_params):
    for i, (c, py) in enumerate(zip(c_params, py_params, strict=True)):
        np.testing.assert_array_equal(c, py.reshape(c.shape), err_msg=f"parameter array {i}")


def random_steps(rng, n_inputs, n_classes, sizes, lr_invs, density=0.5, x_max=256):
    steps = []
    for n, lr in zip(sizes, lr_invs):
        x = rng.integers(0, x_max, (n, n_inputs)) * (rng.random((n, n_inputs)) < density)
        steps.append((x.astype(np.uint8), rng.integers(0, n_classes, n), lr))
    return steps


def python_rows(model, x):
    """Python's scores and classes row by row; class -1 (NAME_ERR_OVERFLOW) where it raises."""
    scores = np.zeros((len(x), model.dims[-1]), np.int64)
    classes = np.full(len(x), -1, np.int64)
    for i in range(len(x)):
        try:
            scores[i] = model.scores(x[i : i + 1])[0]
        except IntegerOverflowError:
            continue
        classes[i] = np.argmax(scores[i])
    return scores, classes


def fnv1a(data: bytes) -> int:
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


def checksum_records(arrays):
    """mcu_main.c's ``P`` records of ``arrays``: [bytes, FNV-1a of the little-endian bytes]."""
    return [
        [a.size * a.itemsize, fnv1a(a.astype(a.dtype.newbyteorder("<")).tobytes())] for a in arrays
    ]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def mnist_model_file(tmp_path_factory, mnist):
    """The MNIST paper net after 300 DFA steps from zero, saved with its feedback matrices."""
    model = pocketnn.build_mlp([784, 100, 50, 10])
    trainer = pocketnn.Trainer(model, rule="dfa", seed=3)
    order = np.random.default_rng(3).permutation(len(mnist.train_labels))[:6000]
    targets = one_hot(mnist.train_labels.astype(np.int64), 10)
    for s in range(300):
        idx = order[20 * s : 20 * (s + 1)]
        trainer.step(mnist.train_images[idx], targets=targets[idx])
    settings, arrays = trainer.state()
    path = tmp_path_factory.mktemp("mnist") / "mnist.npz"
    pocketnn.save(path, model, settings, arrays)
    return path


def mnist_steps(mnist, n_steps, seed, batch=20, lr_inv=1000):
    order = np.random.default_rng(seed).permutation(len(mnist.train_labels))
    return [
        (
            mnist.train_images[order[batch * s : batch * (s + 1)]],
            mnist.train_labels[order[batch * s : batch * (s + 1)]].astype(np.int64),
            lr_inv,
        )
        for s in range(n_steps)
    ]


# --------------------------------------------------------------------------- generated text


def test_generated_files_are_readable_portable_c(tmp_path):
    rng = np.random.default_rng(0)
    model = random_model([12, 6, 4], "pocket_tanh", rng)
    paths = export_c(
        model, tmp_path / "out", name="tiny", with_training=True, feedback=random_feedback(model, 1)
    )
    assert [p.name for p in paths] == ["tiny.h", "tiny.c"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tiny.c", "tiny.h"]
    header, source = (p.read_text() for p in paths)
    for text in (header, source):
        assert "generated by pocketnn" in text and "12-6-4" in text
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        for word in ("float", "double", "malloc", "math.h"):
            assert word not in code
    includes = {
        line.strip()
        for line in header.splitlines() + source.splitlines()
        if line.startswith("#include")
    }
    assert includes == {"#include <stdint.h>", '#include "tiny.h"'}
    for symbol in (
        "TINY_N_INPUTS 12",
        "TINY_N_CLASSES 4",
        "TINY_MAX_BATCH 20",
        "int tiny_predict(",
        "int tiny_train_step(",
        "TINY_FOR_EACH_PARAM(X)",
    ):
        assert symbol in header
    compile_strictest(paths[1], tmp_path / "tiny.o")


def test_export_from_file_takes_feedback_and_settings(tmp_path):
    model = random_model([8, 5, 3], "pocket_tanh", np.random.default_rng(1))
    trainer = pocketnn.Trainer(model, batch_size=7, seed=2)
    path = tmp_path / "m.npz"
    pocketnn.save(path, model, *trainer.state())
    header = generate_c(path, "m", with_training=True)["m.h"]
    assert "#define M_MAX_BATCH 7" in header and "Model:   m.npz" in header
    assert "M_TARGET_VALUE 15" in header


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "2fast"}, "not a C identifier"),
        ({"name": "int"}, "C keyword"),
        ({"name": "my-model"}, "not a C identifier"),
        ({"with_training": True}, "needs feedback"),
        ({"with_training": True, "feedback": [np.zeros((3, 4), np.int32)]}, "shape (3, 5)"),
        ({"with_training": True, "feedback": []}, "needs 1 feedback matrices"),
        (
            {"with_training": True, "max_batch": 0, "feedback": [np.ones((3, 5), np.int32)]},
            "max_batch",
        ),
    ],
)
def test_export_refuses_bad_input(kwargs, message):
    model = random_model([4, 5, 3], "pocket_tanh", np.random.default_rng(2))
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        generate_c(model, **kwargs)


def test_export_refuses_unsupported_activation_and_missing_file(tmp_path):
    model = pocketnn.build_mlp([4, 3], output_activation="pocket_softmax")
    with pytest.raises(ValueError, match="pocket_softmax.*not supported by export-c"):
        export_c(model, tmp_path)
    with pytest.raises(ValueError, match="no such model file"):
        export_c(tmp_path / "missing.npz", tmp_path)
    path = tmp_path / "plain.npz"
    pocketnn.save(path, pocketnn.build_mlp([4, 3, 2]))
    with pytest.raises(ValueError, match="feedback0"):
        export_c(path, tmp_path, with_training=True)
    assert not list(tmp_path.glob("*.c"))


def test_c_array_round_trips_extreme_values():
    text = c_array(np.array([[-(2**31), 2**31 - 1, 0], [5, -5, 2**40]], dtype=np.int64))
    assert "INT32_MIN" in text and "2147483647" in text and "INT64_C(1099511627776)" in text


# --------------------------------------------------------------------------- host, bit-exact


@pytest.mark.parametrize("activation", SUPPORTED)
@pytest.mark.parametrize("with_training", [False, True])
def test_host_predict_matches_python(tmp_path, activation, with_training):
    rng = np.random.default_rng(len(activation))
    hidden = "pocket_tanh" if with_training and activation == "as_is" else activation
    model = random_model([30, 16, 12, 5], hidden, rng, scale=2000, output_activation=activation)
    x = (rng.integers(0, 256, (400, 30)) * (rng.random((400, 30)) < 0.6)).astype(np.uint8)
    x[0] = 0
    x[1] = 255
    fb = random_feedback(model, 4) if with_training else None
    exe = build_host(model, tmp_path, "net", with_training, fb)
    scores, classes = host_predict(exe, x, 5)
    expected_scores, expected_classes = python_rows(model, x)
    ok = expected_classes >= 0
    np.testing.assert_array_equal(classes, expected_classes)
    np.testing.assert_array_equal(scores[ok], expected_scores[ok])


@pytest.mark.parametrize("activation", SUPPORTED)
def test_activation_pieces_match_python_across_breakpoints(tmp_path, activation):
    """A one-layer net 1 -> 512 whose z = a * W + b sweeps every piece and breakpoint."""
    model = pocketnn.build_mlp([1, 512], activation)
    w = np.concatenate([np.ones(256), np.full(128, 257), np.full(64, 8191), np.full(64, -32767)])
    b = np.concatenate([np.linspace(-32767, 32767 - 255, 256), np.linspace(-32767, 32767, 256)])
    model.layers[0].set_params(w.astype(np.int64).reshape(1, -1), b.astype(np.int64))
    x = np.arange(256, dtype=np.uint8).reshape(-1, 1)
    exe = build_host(model, tmp_path, "act")
    scores, _ = host_predict(exe, x, 512)
    np.testing.assert_array_equal(scores, model.scores(x))


TRAINABLE = [(act, act) for act in SUPPORTED if act not in ("as_is", "rescale")] + [
    ("pocket_tanh", "as_is"),
    ("pocket_sigmoid", "rescale"),
    ("pocket_relu8bit", "pocket_tanh"),
    ("pocket_tanh", "pocket_leakyrelu"),
]


@pytest.mark.parametrize(("hidden", "output"), TRAINABLE)
def test_host_training_matches_python(tmp_path, hidden, output):
    """DFA steps (full and partial batches, changing lr_inv) under UBSan, as in Python."""
    rng = np.random.default_rng(5 + len(hidden + output))
    leaky = hidden == "pocket_leakyrelu"  # outputs up to 32767: keep the values small
    model = random_model(
        [40, 24, 16, 6], hidden, rng, scale=3 if leaky else 100, output_activation=output
    )
    fb = random_feedback(model, 6)
    steps = random_steps(
        rng,
        40,
        6,
        sizes=[8, 8, 3, 8, 1, 8],
        lr_invs=[1, 7, 1000, 1, 50, 3],
        x_max=2 if leaky else 256,
    )
    exe = build_host(model, tmp_path, "trained", True, fb, max_batch=8, sanitize=True)
    py_results, py_params = python_train(copy_model(model), fb, steps)
    c_results, c_params = host_train(exe, model, steps[: len(py_results)])
    assert c_results == py_results
    assert_params_equal(c_params, py_params)
    assert len(py_results) >= 2 and py_results[0] >= 0  # at least one step updated weights


def test_training_refuses_unbounded_hidden_activations():
    model = pocketnn.build_mlp([8, 4, 4, 3], "as_is")
    with pytest.raises(ExportError, match="could overflow int64.*bounded activations"):
        generate_c(model, with_training=True, feedback=random_feedback(model, 1))


def test_training_overflow_is_an_error_code_and_changes_nothing(tmp_path):
    """Where Python raises IntegerOverflowError, C returns NAME_ERR_OVERFLOW (-1)."""
    model = pocketnn.build_mlp([300, 4, 3])  # 255 * 300 * 32767 > 2**31
    model.layers[0].set_params(np.full((300, 4), 32767), np.zeros(4, np.int64))
    model.layers[1].set_params(np.ones((4, 3), np.int64), np.zeros(3, np.int64))
    fb = [np.ones((3, 4), np.int32)]
    x = np.full((2, 300), 255, np.uint8)
    with pytest.raises(IntegerOverflowError):
        copy_model(model).scores(x)
    exe = build_host(model, tmp_path / "t", "big", True, fb, max_batch=4)
    _, classes = host_predict(exe, x, 3)
    assert classes.tolist() == [-1, -1]
    results, params = host_train(exe, model, [(x, [0, 1], 10)])
    assert results == [-1] == python_train(copy_model(model), fb, [(x, [0, 1], 10)])[0]
    assert_params_equal(params, initial_params(model))
    # the inference-only build knows its weights: the same overflow, the same answer
    exe = build_host(model, tmp_path / "i", "big")
    assert host_predict(exe, x, 3)[1].tolist() == [-1, -1]


@pytest.mark.parametrize(
    ("feedback_value", "where"), [(100, "feedback e @ B"), (1, "fc2: update a.T @ delta")]
)
def test_run_time_overflow_checks_match_python(tmp_path, feedback_value, where):
    """An as_is output makes e unbounded: e @ B and a^T @ delta get int32 checks."""
    model = pocketnn.build_mlp([8, 4, 3], "pocket_tanh", "as_is")
    model.layers[0].set_params(np.full((8, 4), 32767), np.zeros(4, np.int64))
    model.layers[1].set_params(np.full((4, 3), 32767), np.zeros(3, np.int64))
    fb = [np.full((3, 4), feedback_value, np.int32)]
    source = generate_c(model, "chk", True, fb, max_batch=4)["chk.c"]
    assert "fc1_check_gradients" in source and "int64_t sum = 0" in source
    exe = build_host(model, tmp_path, "chk", True, fb, max_batch=4, sanitize=True)
    small = (np.zeros((4, 8), np.uint8), [0, 1, 2, 0], 1)
    big = (np.full((4, 8), 255, np.uint8), [0, 1, 2, 0], 1)
    py_model = copy_model(model)
    trainer = pocketnn.Trainer(copy_model(model), feedback=fb)
    with pytest.raises(IntegerOverflowError, match=where):
        trainer.step(big[0], np.array(big[1]), lr_inv=1)
    py_results, py_params = python_train(py_model, fb, [small, big])
    c_results, c_params = host_train(exe, model, [small, big])
    assert py_results == c_results and c_results[1] == -1
    assert_params_equal(c_params, py_params)  # the failed step changed nothing in C


def test_train_step_rejects_bad_arguments(tmp_path):
    model = random_model([6, 4, 3], "pocket_tanh", np.random.default_rng(8))
    exe = build_host(model, tmp_path, "args", True, random_feedback(model, 1), max_batch=4)
    x = np.ones((5, 6), np.uint8)
    steps = [(x[:0], [], 10), (x, [0] * 5, 10), (x[:2], [0, 3], 10), (x[:2], [0, 1], 0)]
    results, params = host_train(exe, model, steps)
    assert results == [-2, -2, -3, -4]
    assert_params_equal(params, initial_params(model))


# --------------------------------------------------------------------------- MNIST, host


@pytest.mark.slow
def test_mnist_host_predict_all_test_images(tmp_path, mnist, mnist_model_file):
    model = pocketnn.load(mnist_model_file)
    exe = build_host(mnist_model_file, tmp_path, "mnist")
    scores, classes = host_predict(exe, mnist.test_images, 10)
    np.testing.assert_array_equal(scores, model.scores(mnist.test_images))
    np.testing.assert_array_equal(classes, model.predict(mnist.test_images))
    assert (classes == mnist.test_labels).mean() > 0.85  # a trained model, not a trivial one


@pytest.mark.slow
@pytest.mark.parametrize("start", ["trained", "zero"])
def test_mnist_host_training_matches_python(tmp_path, mnist, mnist_model_file, start):
    model, _, arrays = pocketnn.load_checkpoint(mnist_model_file)
    fb = [arrays["feedback0"], arrays["feedback1"]]
    if start == "zero":
        model = pocketnn.build_mlp([784, 100, 50, 10])
    steps = mnist_steps(mnist, 60, seed=11)
    steps[-1] = (steps[-1][0][:7], steps[-1][1][:7], 2000)  # a last, partial batch
    exe = build_host(model, tmp_path, "mnist", True, fb)
    c_results, c_params = host_train(exe, model, steps)
    py_results, py_params = python_train(model, fb, steps)
    assert c_results == py_results
    assert_params_equal(c_params, py_params)


# --------------------------------------------------------------------------- Cortex-M0


def _float_snippet(tmp_path, cpu_flags):
    src = tmp_path / "float_snippet.c"
    src.write_text(
        "float scale(float a, int b) { return a * (float)b + 0.5f; }\n"
        "double half(int x) { return x / 2.0; }\n"
    )
    obj = tmp_path / "float_snippet.o"
    run_tool(["arm-none-eabi-gcc", *cpu_flags, "-O2", "-c", src, "-o", obj])
    return obj


def test_float_checker_detects_float_helpers_and_instructions(tmp_path):
    soft = find_float_usage(
        _float_snippet(tmp_path, ["-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft"])
    )
    assert any("__aeabi_fmul" in f for f in soft) and any("__aeabi_i2d" in f for f in soft)
    hard = find_float_usage(
        _float_snippet(
            tmp_path, ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
        )
    )
    assert any(f.startswith("instruction") and "vcvt.f32.s32" in f for f in hard)


def _mnist_firmware(tmp_path, model_file, with_training, main_c):
    """Export the MNIST model into ``tmp_path`` and cross-compile it with a harness main."""
    _, source = export_c(model_file, tmp_path, "mnist", with_training)
    return build_firmware(
        [source],
        [HARNESS_DIR / main_c, HARNESS_DIR / "runtime.c"],
        tmp_path / f"{Path(main_c).stem}.elf",
        [tmp_path],
        harness_defines("mnist", with_training),
    )


def test_firmware_builds_from_relative_paths(tmp_path, monkeypatch, mnist_model_file):
    """The compiler runs in the object folder; paths given relative to the caller's folder
    must still name the caller's files."""
    monkeypatch.chdir(tmp_path)
    _, source = export_c(mnist_model_file, Path("fw"), "mnist", False)
    elf = build_firmware(
        [source.relative_to(tmp_path) if source.is_absolute() else source],
        [HARNESS_DIR / "footprint_main.c", HARNESS_DIR / "runtime.c"],
        Path("fw") / "footprint_main.elf",
        [Path("fw")],
        harness_defines("mnist", False),
    )
    assert elf.is_file() and "mnist_predict" in run_tool(["arm-none-eabi-nm", elf]).stdout.decode()


@pytest.mark.slow
@pytest.mark.parametrize("with_training", [False, True])
def test_cortex_m0_build_is_integer_only(tmp_path, mnist_model_file, with_training):
    elf = _mnist_firmware(tmp_path, mnist_model_file, with_training, "footprint_main.c")
    assert find_float_usage(elf) == []
    assert find_float_usage(elf.with_suffix(".obj") / "mnist.o") == []
    symbols = run_tool(["arm-none-eabi-nm", elf]).stdout.decode()
    assert "mnist_predict" in symbols
    assert ("mnist_train_step" in symbols) == with_training


def mcu_data_header(path, test_images, steps, n_after):
    batch = len(steps[0][1])
    train_x = np.concatenate([x for x, _, _ in steps])
    train_y = np.concatenate([y for _, y, _ in steps])
    path.write_text(
        "/* Test data for mcu_main.c, written by tests/test_export_c.py. */\n"
        "#include <stdint.h>\n"
        f"#define MCU_N_TEST {len(test_images)}\n#define MCU_N_AFTER {n_after}\n"
        f"#define MCU_N_STEPS {len(steps)}\n#define MCU_BATCH {batch}\n"
        f"#define MCU_LR_INV {steps[0][2]}\n"
        f"static const uint8_t mcu_test_images[{len(test_images)}][{test_images.shape[1]}] = "
        f"{c_array(test_images)};\n"
        f"static const uint8_t mcu_train_images[{len(train_x)}][{train_x.shape[1]}] = "
        f"{c_array(train_x)};\n"
        f"static const uint8_t mcu_train_labels[{len(train_y)}] = {c_array(train_y)};\n"
    )


def parse_mcu_output(text):
    records: dict[str, list[list[int]]] = {}
    for line in text.splitlines():
        tag, *values = line.split()
        if tag in {"S", "A", "T", "P", "N", "STACK"}:
            records.setdefault(tag, []).append([int(v) for v in values])
    assert text.rstrip().endswith("DONE"), text[-2000:]
    return records


@pytest.mark.slow
@pytest.mark.parametrize("with_training", [False, True])
def test_qemu_cortex_m_runs_bit_exact(tmp_path, mnist, mnist_model_file, with_training):
    """The cross-compiled firmware on an emulated Cortex-M board gives Python's numbers."""
    model, _, arrays = pocketnn.load_checkpoint(mnist_model_file)
    fb = [arrays["feedback0"], arrays["feedback1"]]
    test_images = mnist.test_images[:300]
    steps = mnist_steps(mnist, 3, seed=21)
    mcu_data_header(tmp_path / "mcu_data.h", test_images, steps, n_after=50)
    elf = _mnist_firmware(tmp_path, mnist_model_file, with_training, "mcu_main.c")
    assert find_float_usage(elf) == []
    out = parse_mcu_output(run_qemu(elf, timeout=120))

    expected = np.column_stack([model.predict(test_images), model.scores(test_images)])
    np.testing.assert_array_equal(np.array(out["S"]), expected)
    assert 0 < out["STACK"][0][0] < 4096
    if not with_training:
        return
    py_results, py_params = python_train(model, fb, steps)
    assert [r[0] for r in out["T"]] == py_results
    assert out["P"] == checksum_records(py_params)
    after = test_images[:50]
    expected = np.column_stack([model.predict(after), model.scores(after)])
    np.testing.assert_array_equal(np.array(out["A"]), expected)


# --------------------------------------------------------------------------- footprint, example


@pytest.mark.slow
def test_mnist_footprint_meets_the_pico_goals(mnist_model_file):
    report = footprint_report(mnist_model_file, name="mnist", label="MNIST 784-100-50-10")
    infer, train = report.builds
    assert (infer.label, train.label) == ("inference", "training")
    assert infer.flash <= PICO_FLASH_GOAL and infer.ram < INFERENCE_RAM_GOAL
    assert train.ram <= PICO_SRAM
    assert infer.model_rodata >= 2 * model_params(mnist_model_file)  # int16 weights in flash
    assert train.data + train.bss >= 2 * model_params(mnist_model_file)  # ... and in RAM
    assert "| MNIST 784-100-50-10 | training |" in str(report)


def model_params(path):
    return pocketnn.load(path).n_params


@pytest.mark.slow
def test_example_firmware_builds_and_runs(tmp_path, mnist_model_file):
    """examples/mcu_firmware: its Makefile builds for Cortex-M0 and the program runs."""
    require_tool("make")
    work = tmp_path / "example"
    shutil.copytree(EXAMPLE_DIR, work)
    export_c(mnist_model_file, work, "model", with_training=True)
    proc = subprocess.run(
        ["make", "-C", work, f"PNN_HARNESS={HARNESS_DIR}", "model.elf"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert find_float_usage(work / "model.elf") == []
    text = run_qemu(work / "model.elf", timeout=60)
    assert "trained" in text and "FAULT" not in text
