"""Tests for the C export of layered models (convolutions, pooling, scaling, dense layers).

The generated C is built with the real tools and compared with Python value for value:
gcc on the host (UBSan included) for small random networks (fixed-point ones among them;
tests/test_export_c_fixed.py has the trained fixed-point models) and for a CNN trained on MNIST,
on all 10,000 test images; arm-none-eabi-gcc for a Cortex-M0 (no float helper or
instruction) run under qemu-system-arm; and the footprint against a Pico-class chip.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_export_c import build_host, compile_strictest, host_predict, python_rows

import pocketnn
from pocketnn.cli import main
from pocketnn.export import ExportError, export_c, footprint_report, generate_c
from pocketnn.export.c import c_array
from pocketnn.export.c.cnn_planner import (
    Interval,
    linear_interval,
    plan_buffers,
    plan_stages,
    storage_type,
)
from pocketnn.export.chips import RP2040, fit_verdict, kilobytes
from pocketnn.export.footprint import (
    HARNESS_DIR,
    build_firmware,
    find_float_usage,
    harness_defines,
    run_qemu,
)
from pocketnn.nn.architecture import build, calibrate
from pocketnn.nn.layers import (
    ActivationLayer,
    AvgPool2D,
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    Scale,
)
from pocketnn.train.seeding import spread_init

TEST_ARCH = "c8k5p1-p2-c16k3s2p1-a2-f32-10"
"""The trained test CNN: conv stride 1 and 2 with padding, max and average pooling (the
second drops a border: 7x7 -> 3x3), flatten, scale, leaky_relu8 and dense layers."""
MCU_IMAGES = 300


# --------------------------------------------------------------------------- helpers


def randomize(model, rng, scale=300):
    for layer in model.layers:
        params = layer.parameters()
        if params:
            layer.set_parameters(
                {k: rng.integers(-scale, scale + 1, v.shape) for k, v in params.items()}
            )
    return model


def random_images(rng, n, n_inputs):
    """Bytes with a different density and ceiling per image, zeros included."""
    ceiling = rng.integers(1, 257, (n, 1))
    x = rng.integers(0, 256, (n, n_inputs)) % ceiling
    return (x * (rng.random((n, n_inputs)) < rng.random((n, 1)) + 0.2)).astype(np.uint8)


def mixed_model(rng):
    """Conv (stride 1, padding) -> scale -> leaky ReLU -> max pool dropping a border ->
    conv (stride 2, padding) -> pocket tanh of the raw sums -> scale -> average pool dropping
    a border -> flatten -> linear dense -> scale."""
    model = pocketnn.Sequential(
        [
            Conv2D(1, 4, 3, 10, 9, stride=1, padding=1, name="conv1"),
            Scale((4, 10, 9), 500, name="conv1.scale"),
            ActivationLayer((4, 10, 9), "leaky_relu8", name="conv1.act"),
            MaxPool2D(4, 10, 9, 2, name="pool1"),
            Conv2D(4, 6, 3, 5, 4, stride=2, padding=1, name="conv2"),
            ActivationLayer((6, 3, 2), "pocket_tanh", fan_in=2, name="conv2.act"),
            Scale((6, 3, 2), 2, bound=50, name="conv2.scale"),
            AvgPool2D(6, 3, 2, 2, name="pool2"),
            Flatten(6, 1, 1, name="flatten"),
            Dense(6, 5, "as_is", name="fc"),
            Scale((5,), 50, name="fc.scale"),
        ]
    )
    return randomize(model, rng)


def input_side_model(rng):
    """Max pooling on the bytes themselves, a 1x1 convolution, average pooling of raw sums,
    and a dense layer with its own activation whose output is the scores."""
    model = pocketnn.Sequential(
        [
            MaxPool2D(2, 8, 7, 2, name="pool0"),
            Conv2D(2, 3, 1, 4, 3, name="conv1"),
            AvgPool2D(3, 4, 3, 2, name="pool1"),
            Flatten(3, 2, 1, name="flat"),
            Dense(6, 4, "pocket_tanh", name="out"),
        ]
    )
    return randomize(model, rng)


def elementwise_first_model(rng):
    """Scaling and an activation on the input (a stage of their own), a stride-3 convolution
    and a dense layer with its own activation; two layers share a name."""
    model = pocketnn.Sequential(
        [
            Scale((1, 6, 6), 3, bound=50, name="pre"),
            ActivationLayer((1, 6, 6), "plu", name="pre"),
            Conv2D(1, 2, 3, 6, 6, stride=3, name="conv"),
            Flatten(2, 2, 2, name="flat"),
            Dense(8, 3, "pocket_relu8bit", name="fc"),
        ]
    )
    return randomize(model, rng)


def flatten_only_model(rng):
    """No arithmetic at all: the scores are the input bytes."""
    return pocketnn.Sequential([Flatten(1, 2, 3, name="flat")])


def overflowing_model(rng):
    """Sums that can leave int32 (as in Python, where the guard raises): a convolution of
    300 large weights, average pooling of those sums (an int64 window sum), a dense layer."""
    model = pocketnn.Sequential(
        [
            Conv2D(3, 2, 10, 12, 12, stride=2, name="big"),
            AvgPool2D(2, 2, 2, 2, name="pool"),
            Flatten(2, 1, 1, name="flat"),
            Dense(2, 3, "as_is", name="fc"),
        ]
    )
    conv, dense = model.layers[0], model.layers[3]
    W = rng.integers(-300, 301, conv.W.shape)
    W[:, 0] = 32767  # channel 0 overflows for bright images
    conv.set_parameters({"W": W, "b": np.array([[32767, -5]])})
    dense.set_parameters({"W": rng.integers(-1, 2, (2, 3)), "b": rng.integers(-9, 10, (1, 3))})
    return model


def fixed_cnn(rng):
    """Input scaling, a padded fixed-point convolution without bias, leaky_relu, max pooling,
    a stride-2 fixed-point convolution *with* bias, average pooling, a fixed-point dense layer
    with its own leaky_relu and a linear fixed-point output layer."""
    fixed = {"frac_bits": 6, "bias": False}
    model = pocketnn.Sequential(
        [
            Scale((1, 10, 9), 4, name="input.scale"),
            Conv2D(1, 4, 3, 10, 9, padding=1, name="conv1", **fixed),
            ActivationLayer((4, 10, 9), "leaky_relu", name="conv1.act"),
            MaxPool2D(4, 10, 9, 2, name="pool1"),
            Conv2D(4, 6, 3, 5, 4, stride=2, padding=1, name="conv2", frac_bits=6),
            ActivationLayer((6, 3, 2), "leaky_relu", name="conv2.act"),
            AvgPool2D(6, 3, 2, 2, name="pool2"),
            Flatten(6, 1, 1, name="flatten"),
            Dense(6, 7, "leaky_relu", name="fc1", **fixed),
            Dense(7, 5, "as_is", name="fc2", **fixed),
        ]
    )
    return randomize(model, rng, scale=400)


def fixed_mlp(rng):
    """The builder's fixed-point MLP: input scaling, dense + leaky_relu twice, a bare dense."""
    model = build("30-12-8-4", (30,), activation="leaky_relu", frac_bits=8)
    return randomize(model, rng, scale=900)


def dense_only_fixed_mlp(rng):
    """Dense layers alone, with their own activations: fixed point sends them to the layered
    exporter (the MLP exporter's C has a bias and no fractional bits)."""
    model = pocketnn.Sequential(
        [
            Dense(20, 9, "leaky_relu", name="fc1", frac_bits=9, bias=False),
            Dense(9, 3, "as_is", name="fc2", frac_bits=3, bias=False),
        ]
    )
    return randomize(model, rng, scale=200)


def wide_fixed_model(rng):
    """Sums beyond int32: a fixed-point convolution whose sums Python checks against int32
    (raising for bright images), then a fixed-point dense layer whose int64 sums Python keeps
    exactly and whose quotients by 2**30 are int32 again."""
    model = pocketnn.Sequential(
        [
            Conv2D(3, 2, 10, 12, 12, stride=2, name="big", frac_bits=8, bias=False),
            Flatten(2, 2, 2, name="flat"),
            Dense(8, 3, "as_is", name="wide", weight_clamp=2**31 - 1, frac_bits=30, bias=False),
        ]
    )
    conv, dense = model.layers[0], model.layers[2]
    W = rng.integers(-300, 301, conv.W.shape)
    W[:, 0] = 32767  # channel 0 leaves int32 for bright images
    conv.set_parameters({"W": W})
    dense.set_parameters({"W": rng.integers(-(2**31) + 1, 2**31, dense.W.shape)})
    return model


RANDOM_MODELS = [
    mixed_model,
    input_side_model,
    elementwise_first_model,
    flatten_only_model,
    fixed_cnn,
    fixed_mlp,
    dense_only_fixed_mlp,
]
"""Models whose sums fit int32 for every input."""
OVERFLOWING_MODELS = [overflowing_model, wide_fixed_model]
"""Models whose sums leave int32 for bright images, where Python raises."""
MODELS = RANDOM_MODELS + OVERFLOWING_MODELS


def check_host_matches_python(model, tmp_path, x, sanitize=True):
    exe = build_host(model, tmp_path, "net", sanitize=sanitize)
    c_scores, c_classes = host_predict(exe, x, model.n_classes)
    py_scores, py_classes = python_rows(model, x)
    np.testing.assert_array_equal(c_classes, py_classes)
    ok = py_classes >= 0
    np.testing.assert_array_equal(c_scores[ok], py_scores[ok])
    return py_classes


def train_cnn(mnist, arch=TEST_ARCH, steps=300, seed=1):
    """``arch`` for MNIST, initialised, calibrated and trained ``steps`` backprop steps."""
    model = build(arch, (1, 28, 28))
    spread_init(model, seed)
    calibrate(model, mnist.train_images[:256])
    trainer = pocketnn.Trainer(
        model,
        rule="bp",
        lr_inv=32,
        batch_size=32,
        grad_bits=8,
        lr_double_every=0,
        rounding="stochastic",
        target_value=32,
        seed=seed,
    )
    if steps:
        n = 32 * steps
        trainer.train_epoch(mnist.train_images[:n], mnist.train_labels[:n])
    return trainer


@pytest.fixture(scope="session")
def cnn_model_file(tmp_path_factory, mnist):
    """The test CNN after 300 backprop steps on MNIST, saved as a model file (format 3)."""
    path = tmp_path_factory.mktemp("cnn") / "cnn.npz"
    train_cnn(mnist).save(path)
    return path


# --------------------------------------------------------------------------- planner


def test_intervals_bound_every_partial_sum_and_pick_the_narrowest_type():
    rng = np.random.default_rng(0)
    W = rng.integers(-50, 51, (6, 4))
    b = rng.integers(-9, 10, 4)
    x_range = Interval(-3, 7)
    z = linear_interval(W, b, x_range)
    partial_lo, partial_hi = 0, 0
    for _ in range(2000):
        x = rng.integers(x_range.lo, x_range.hi + 1, 6)
        order = rng.permutation(6)
        partial = b.copy()
        for i in order:
            partial = partial + x[i] * W[i]
            partial_lo, partial_hi = min(partial_lo, partial.min()), max(partial_hi, partial.max())
    assert z.lo <= partial_lo and partial_hi <= z.hi
    corner = np.where(W > 0, x_range.hi, x_range.lo).T  # the inputs that reach z.hi
    assert z.hi == max(int((corner[j] @ W[:, j]) + b[j]) for j in range(4))
    assert storage_type(Interval(-31, 127)) == "int8_t"
    assert storage_type(Interval(0, 255)) == "uint8_t"
    assert storage_type(Interval(-128, 128)) == "int16_t"
    assert storage_type(Interval(0, 40000)) == "uint16_t"
    assert storage_type(Interval(-(2**31), 2**31 - 1)) == "int32_t"


def test_stages_fuse_element_wise_layers_and_buffers_ping_pong():
    model = build(TEST_ARCH, (1, 28, 28))
    stages = plan_stages(model)
    assert [(s.ident, s.kind) for s in stages] == [
        ("conv1", "conv"),
        ("pool1", "maxpool"),
        ("conv2", "conv"),
        ("pool2", "avgpool"),
        ("fc1", "dense"),
        ("fc2", "dense"),
    ]
    assert stages[0].layers == ["conv1", "conv1.scale", "conv1.act"]
    assert stages[3].layers == ["pool2", "flatten1"]
    # every int32 sum is stored as the int8 its scaling and activation prove
    assert [s.out_type for s in stages] == ["int8_t"] * 5 + ["int32_t"]
    assert stages[0].in_type == "uint8_t" and stages[0].acc_type == "int32_t"
    assert not any(s.z_check for s in stages)  # the builder's clamps prove int32 sums
    buffers = plan_buffers(stages)
    assert buffers.members == [{"int8_t": 8 * 26 * 26}, {"int8_t": 8 * 13 * 13}]
    assert buffers.sizes == [5408, 1352]


def test_input_side_and_wide_values_get_their_types():
    rng = np.random.default_rng(1)
    stages = plan_stages(input_side_model(rng))
    assert stages[0].kind == "maxpool" and stages[0].out_type == "uint8_t"  # bytes stay bytes
    assert stages[1].kind == "conv" and not stages[1].steps  # raw sums, stored wide
    assert stages[1].z.magnitude <= 255 * 2 * 300 + 300 and stages[1].out_type == "int32_t"
    stages = plan_stages(overflowing_model(rng))
    assert stages[0].z_check and stages[0].acc_type == "int64_t"
    assert stages[1].acc_type == "int64_t"  # four int32 values summed
    assert stages[2].z_check
    stages = plan_stages(elementwise_first_model(rng))
    assert [(s.ident, s.kind) for s in stages] == [
        ("pre", "copy"),
        ("conv", "conv"),
        ("fc", "dense"),
    ]
    assert stages[0].layers == ["pre", "pre"] and stages[1].layers == ["conv", "flat"]
    assert [step.ident for step in stages[0].steps] == ["layer1", "layer2"]  # names repeat
    assert stages[0].out_values == Interval(0, 5) and stages[0].out_type == "int8_t"


@pytest.mark.gcc
@pytest.mark.parametrize("make", MODELS, ids=lambda f: f.__name__)
def test_generated_cnn_is_portable_strict_c(tmp_path, make):
    model = make(np.random.default_rng(2))
    header, source = export_c(model, tmp_path, "tiny")
    for text in (header.read_text(), source.read_text()):
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        for word in ("float", "double", "malloc", "math.h"):
            assert word not in code
        assert {line for line in text.splitlines() if line.startswith("#include")} <= {
            "#include <stdint.h>",
            '#include "tiny.h"',
        }
    text = header.read_text()
    for symbol in (
        f"TINY_N_INPUTS {model.dims[0]}",
        f"TINY_N_CLASSES {model.n_classes}",
        "int tiny_scores(",
        "int tiny_predict(",
    ):
        assert symbol in text
    assert "fits RP2040" in text
    compile_strictest(source, tmp_path / "tiny.o")


def test_training_export_of_a_cnn_is_refused_in_one_line(tmp_path, capsys):
    model = build("c4k3-p2-10", (1, 8, 8))
    with pytest.raises(ExportError, match="--with-training exports MLPs of Dense and Activation"):
        generate_c(model, "net", with_training=True, feedback=[])
    path = tmp_path / "cnn.npz"
    pocketnn.save(path, model)
    assert main(["export-c", str(path), "--out", str(tmp_path / "c"), "--with-training"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this model has Conv2D, MaxPool2D layers" in err
    assert main(["export-c", str(path), "--out", str(tmp_path / "c"), "--name", "cnn"]) == 0
    assert (tmp_path / "c" / "cnn.c").is_file()


def test_unsupported_layer_is_refused_with_its_name():
    class Odd:
        name, input_shape, output_shape = "odd1", (4,), (4,)

    model = pocketnn.Sequential([Odd(), Dense(4, 2, "as_is")])
    with pytest.raises(ExportError, match="odd1: Odd layers are not supported by export-c"):
        generate_c(model)


def test_fit_verdict_gives_the_numbers():
    assert kilobytes(1024) == "1" and kilobytes(1025) == "1.1" and kilobytes(2**21) == "2,048"
    assert fit_verdict("m", 1000, 2000) == (
        "m: fits RP2040 (Raspberry Pi Pico): flash 1 of 2,048 KB, RAM 2 of 264 KB"
    )
    too_big = fit_verdict("m", RP2040.flash + 1, 300 * 1024)
    assert too_big == (
        "m: does not fit RP2040 (Raspberry Pi Pico): needs 2,048.1 KB flash > 2,048 KB and "
        "300 KB RAM > 264 KB"
    )


# --------------------------------------------------------------------------- host, random nets


@pytest.mark.gcc
@pytest.mark.parametrize("make", RANDOM_MODELS, ids=lambda f: f.__name__)
def test_random_layered_models_match_python_under_ubsan(tmp_path, make):
    rng = np.random.default_rng(3)
    model = make(rng)
    x = random_images(rng, 400, model.dims[0])
    classes = check_host_matches_python(model, tmp_path, x)
    assert (classes >= 0).all() and len(set(classes.tolist())) > 1


@pytest.mark.gcc
@pytest.mark.parametrize("make", OVERFLOWING_MODELS, ids=lambda f: f.__name__)
def test_sums_beyond_int32_are_errors_where_python_raises(tmp_path, make):
    rng = np.random.default_rng(4)
    model = make(rng)
    x = random_images(rng, 400, model.dims[0])
    x[:40] = 255  # bright images overflow the first convolution
    classes = check_host_matches_python(model, tmp_path, x)
    assert (classes == -1).sum() >= 40 and (classes >= 0).sum() > 100


# --------------------------------------------------------------------------- MNIST, host


@pytest.mark.gcc
@pytest.mark.slow
def test_mnist_cnn_host_bit_exact_on_all_test_images(tmp_path, mnist, cnn_model_file):
    model = pocketnn.load(cnn_model_file)
    assert {layer.type_name for layer in model.layers} == {
        "Conv2D",
        "Scale",
        "Activation",
        "MaxPool2D",
        "AvgPool2D",
        "Flatten",
        "Dense",
    }
    exe = build_host(cnn_model_file, tmp_path, "mnist_cnn")
    scores, classes = host_predict(exe, mnist.test_images, 10)
    np.testing.assert_array_equal(scores, model.scores(mnist.test_images))
    np.testing.assert_array_equal(classes, np.argmax(scores, axis=1))
    assert (classes == mnist.test_labels).mean() > 0.6  # a trained model, not a trivial one


# --------------------------------------------------------------------------- Cortex-M0


def write_mcu_images(path, images):
    path.write_text(
        "/* Test images for mcu_main.c, written by tests/test_export_c_cnn.py. */\n"
        "#include <stdint.h>\n"
        f"#define MCU_N_TEST {len(images)}\n"
        f"static const uint8_t mcu_test_images[{len(images)}][{images.shape[1]}] = "
        f"{c_array(images)};\n"
    )


def mcu_firmware(model_file, workdir, images, name="net"):
    """The model's Cortex-M0 firmware (harness mcu_main.c) that classifies ``images``."""
    workdir.mkdir(parents=True, exist_ok=True)
    write_mcu_images(workdir / "mcu_data.h", images)
    _, source = export_c(model_file, workdir, name)
    return build_firmware(
        [source],
        [HARNESS_DIR / "mcu_main.c", HARNESS_DIR / "runtime.c"],
        workdir / "mcu.elf",
        [workdir],
        harness_defines(name, False),
    )


def run_mcu(elf):
    """Run the firmware under QEMU: rows of (class, scores...) and the stack it used."""
    text = run_qemu(elf, timeout=300)
    assert text.rstrip().endswith("DONE"), text[-2000:]
    rows = [list(map(int, line.split()[1:])) for line in text.splitlines() if line[:2] == "S "]
    return np.array(rows, dtype=np.int64), int(re.search(r"STACK (\d+)", text)[1])


@pytest.mark.arm
@pytest.mark.slow
def test_mnist_cnn_on_cortex_m0_is_integer_only_and_bit_exact(tmp_path, mnist, cnn_model_file):
    check_on_cortex_m0(cnn_model_file, tmp_path, mnist.test_images[:MCU_IMAGES], "mnist_cnn")


def check_on_cortex_m0(model_file, workdir, images, name):
    """The model's Cortex-M0 firmware holds no floating point and, under QEMU, gives
    Python's classes and scores for every image, within a small stack."""
    model = pocketnn.load(model_file)
    elf = mcu_firmware(model_file, workdir, images, name)
    assert find_float_usage(elf) == []
    assert find_float_usage(elf.with_suffix(".obj") / f"{name}.o") == []
    rows, stack = run_mcu(elf)
    expected = np.column_stack([model.predict(images), model.scores(images)])
    np.testing.assert_array_equal(rows, expected)
    assert 0 < stack < 1024


@pytest.mark.arm
@pytest.mark.slow
def test_mnist_cnn_footprint_fits_a_pico(cnn_model_file):
    model = pocketnn.load(cnn_model_file)
    report = footprint_report(cnn_model_file, "cnn", with_training=False, label="test CNN")
    (build_,) = report.builds
    stages = plan_stages(model)
    assert build_.model_bss >= sum(plan_buffers(stages).sizes)
    assert build_.model_rodata >= 2 * model.n_params  # int16 weights, in flash
    assert build_.ram < 16 * 1024 and 0 < build_.stack < 1024
    assert "- test CNN inference: fits RP2040 (Raspberry Pi Pico): flash " in str(report)


@pytest.mark.arm
def test_a_cnn_too_big_for_a_pico_says_so_with_numbers():
    model = build("c384k3-a7-10", (1, 28, 28))  # 384 x 28 x 28 bytes after the convolution
    report = footprint_report(model, "big", with_training=False, label="c384k3-a7-10")
    (build_,) = report.builds
    assert build_.ram > RP2040.ram
    line = re.search(r"c384k3-a7-10 inference: does not fit .*", str(report))[0]
    assert f"needs {kilobytes(build_.ram)} KB RAM > 264 KB" in line
