"""Tests for the C export of fixed-point networks (``frac_bits`` > 0, no bias, leaky_relu).

Their sums are divided by ``2**frac_bits`` with C's truncating ``/`` on the proven
accumulator, then activated; the last dense layer's quotients are the scores. Checked with
the real tools, as for the other layered models (whose tests in tests/test_export_c_cnn.py
also run small random fixed-point networks under UBSan): gcc on the host for a fixed-point
CNN and MLP trained on MNIST with the ``cnn`` preset's recipe, on all 10,000 test images; a
Cortex-M0 build (no float helper or instruction) run under qemu-system-arm; the footprint
against a Pico-class chip. The engines' compiled inference paths decline these models, and
every engine gives the reference engine's bits.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_export_c import compile_host, host_predict
from test_export_c_cnn import (
    TEST_ARCH,
    check_on_cortex_m0,
    dense_only_fixed_mlp,
    fixed_cnn,
    fixed_mlp,
    random_images,
    wide_fixed_model,
)

import pocketnn
from pocketnn.cli import main
from pocketnn.engines.compiled import scores as compiled_scores
from pocketnn.engines.dfa_plan import model_plan
from pocketnn.export import ExportError, export_c, footprint_report, generate_c
from pocketnn.export.c.cnn_planner import is_layered, plan_buffers, plan_stages
from pocketnn.nn.architecture import build
from pocketnn.nn.layers import Dense
from pocketnn.train.momentum import MomentumSGD
from pocketnn.train.rules import Backprop
from pocketnn.train.seeding import fixed_point_init

FRAC_BITS = 10
CNN_ARCH = TEST_ARCH
"""The trained fixed-point CNN: the architecture of the scaled test CNN (convolutions of
stride 1 and 2 with padding, max and average pooling, a hidden and an output dense layer),
with 10 fractional bits and leaky_relu instead of scaling layers."""
MLP_ARCH = "784-100-50-10"
TRAIN_IMAGES = 1600
MCU_IMAGES = 300
ENGINES = [
    pytest.param("compiled", marks=pytest.mark.gcc),
    pytest.param("fused", marks=pytest.mark.numba),
    "blas",
    "int",
]


# --------------------------------------------------------------------------- models


def train_fixed_point(mnist, arch, shape, n_images=TRAIN_IMAGES, seed=1):
    """``arch`` built as the ``cnn`` preset builds it (fixed point, leaky_relu) and trained
    one epoch on ``n_images`` MNIST images with the preset's recipe: integer backprop with
    momentum 3 (a step falling linearly to zero), softmax cross-entropy, lr_inv 2**20,
    stochastic rounding, batch 32."""
    model = build(arch, shape, activation="leaky_relu", frac_bits=FRAC_BITS)
    fixed_point_init(model, seed)
    batch = 32
    optimizer = MomentumSGD(
        lr_inv=1 << 20,
        lr_double_every=0,
        rounding="stochastic",
        momentum=3,
        total_steps=-(-n_images // batch),
    )
    trainer = pocketnn.Trainer(
        model,
        rule=Backprop(updated_weights=False),
        optimizer=optimizer,
        batch_size=batch,
        loss="softmax",
        seed=seed,
    )
    x = mnist.train_images[:n_images].reshape(-1, *shape)
    trainer.train_epoch(x, mnist.train_labels[:n_images])
    return trainer


@pytest.fixture(scope="session")
def fixed_model_files(tmp_path_factory, mnist):
    """The fixed-point CNN and MLP after one short training run each, saved as model files."""
    folder = tmp_path_factory.mktemp("fixed")
    paths = {}
    for kind, arch, shape in (("cnn", CNN_ARCH, (1, 28, 28)), ("mlp", MLP_ARCH, (784,))):
        paths[kind] = folder / f"{kind}.npz"
        train_fixed_point(mnist, arch, shape).save(paths[kind])
    return paths


# --------------------------------------------------------------------------- planner


def test_stages_divide_fixed_point_sums_and_keep_no_bias():
    model = build(CNN_ARCH, (1, 28, 28), activation="leaky_relu", frac_bits=FRAC_BITS)
    fixed_point_init(model, 1)
    stages = plan_stages(model)
    # the stages of the same architecture with scaling layers, after the input's scaling
    scaled = plan_stages(build(CNN_ARCH, (1, 28, 28)))
    assert [(s.ident, s.kind) for s in stages] == [("input_scale", "copy")] + [
        (s.ident, s.kind) for s in scaled
    ]
    summing = [s for s in stages if s.has_params]
    assert all(s.frac_bits == FRAC_BITS and s.arrays == ("W",) for s in summing)
    assert not any(s.z_check for s in stages) and {s.acc_type for s in summing} == {"int32_t"}
    for s in summing:  # the value the steps start from is the quotient, not the sum
        assert s.z.magnitude <= s.z_bound // 2**FRAC_BITS < s.z_bound
    # pixels / 4, then leaky_relu outputs: bytes everywhere but the scores
    assert stages[0].out_values.hi == 63
    assert [s.out_type for s in stages] == ["int8_t"] * 6 + ["int32_t"]
    mlp = build(MLP_ARCH, (784,), activation="leaky_relu", frac_bits=FRAC_BITS)
    assert [s.kind for s in plan_stages(mlp)] == ["copy", "dense", "dense", "dense"]


def test_fixed_point_dense_layers_need_the_layered_exporter():
    rng = np.random.default_rng(0)
    assert is_layered(dense_only_fixed_mlp(rng))
    assert not is_layered(pocketnn.build_mlp([20, 9, 3]))
    no_bias = pocketnn.Sequential([Dense(4, 2, "as_is", bias=False)])  # no bias, no fraction
    assert is_layered(no_bias)
    text = generate_c(dense_only_fixed_mlp(rng), "net")["net.c"]
    assert "net_fc1_b" not in text and "int32_t z = 0;" in text
    assert "v = z / 512;  /* fixed point: z / 2**9 */" in text


def test_int64_sums_and_int32_checks_follow_python():
    stages = plan_stages(wide_fixed_model(np.random.default_rng(1)))
    conv, dense = stages
    assert conv.z_check and conv.acc_type == "int64_t"  # Python's matmul guards int32
    assert conv.z.magnitude <= 2**31 // 2**8
    assert not dense.z_check and dense.acc_type == "int64_t"  # exact int64, no guard
    assert dense.z_bound > 2**31 - 1 and dense.z.magnitude <= 2**31 - 1
    text = generate_c(wide_fixed_model(np.random.default_rng(1)), "net")["net.c"]
    assert "v = (int32_t)(z / 1073741824);  /* fixed point: z / 2**30 */" in text


def test_values_beyond_what_python_computes_are_refused_naming_the_layer():
    rng = np.random.default_rng(2)
    wide_quotient = pocketnn.Sequential(
        [Dense(4, 2, "as_is", name="fc9", weight_clamp=2**31 - 1, frac_bits=1, bias=False)]
    )
    wide_quotient.layers[0].set_parameters({"W": np.full((4, 2), 2**31 - 1)})
    with pytest.raises(ExportError, match=r"fc9: z / 2\*\*1 could reach .*, beyond int32"):
        generate_c(wide_quotient)
    # one huge weight per column: every sum fits int64, but Python's product bound
    # |in| * |W| * n_in does not, and Python refuses the product for large inputs
    W = np.zeros((8, 8), dtype=np.int64)
    np.fill_diagonal(W, 2**31 - 1)
    crude = pocketnn.Sequential(
        [
            Dense(2, 8, "as_is", name="fc1", weight_clamp=2**31 - 1, frac_bits=10, bias=False),
            Dense(8, 8, "as_is", name="fc2", weight_clamp=2**31 - 1, frac_bits=30, bias=False),
        ]
    )
    crude.layers[0].set_parameters({"W": rng.integers(2**30, 2**31, (2, 8))})
    crude.layers[1].set_parameters({"W": W})
    with pytest.raises(ExportError, match=r"fc2: \|in\| \* \|W\| \* n_in could reach"):
        generate_c(crude)
    x = np.full((1, 2), 255, dtype=np.uint8)
    with pytest.raises(pocketnn.IntegerOverflowError, match="fc2"):
        crude.scores(x)


def test_training_export_of_a_fixed_point_model_without_training_state_is_refused(tmp_path, capsys):
    """On-device training follows the file's optimizer (tests/test_export_c_fixed_training.py);
    a model saved without one cannot say which."""
    model = dense_only_fixed_mlp(np.random.default_rng(3))
    with pytest.raises(ExportError, match=r"needs its training state"):
        generate_c(model, "net", with_training=True, feedback=[])
    path = tmp_path / "fixed.npz"
    pocketnn.save(path, build("784-16-10", (784,), activation="leaky_relu", frac_bits=10))
    assert main(["export-c", str(path), "--out", str(tmp_path / "c"), "--with-training"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs its training state" in err
    assert main(["export-c", str(path), "--out", str(tmp_path / "c"), "--name", "fx"]) == 0
    assert "FX_FC1_N_IN 784" in (tmp_path / "c" / "fx.h").read_text()


# --------------------------------------------------------------------------- engines


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "make", [fixed_cnn, fixed_mlp, dense_only_fixed_mlp], ids=lambda f: f.__name__
)
def test_every_engine_scores_fixed_point_models_with_the_int_engines_bits(engine, make):
    rng = np.random.default_rng(4)
    model = make(rng)
    x = random_images(rng, 300, model.dims[0])
    assert model_plan(model) is None  # the compiled kernels' tables do not cover it
    with pocketnn.configure(engine=engine):
        got = model.scores(x)
    with pocketnn.configure(engine="int"):
        expected = model.scores(x)
    np.testing.assert_array_equal(got, expected)
    assert len(set(np.argmax(expected, axis=1).tolist())) > 1


@pytest.mark.gcc
def test_the_compiled_test_pass_declines_fixed_point_models():
    rng = np.random.default_rng(5)
    for make in (fixed_mlp, dense_only_fixed_mlp):
        model = make(rng)
        assert compiled_scores(model, random_images(rng, 10, model.dims[0]), 500) is None


# --------------------------------------------------------------------------- host, random nets


# --------------------------------------------------------------------------- MNIST


@pytest.fixture(params=["cnn", "mlp"])
def trained(request, fixed_model_files):
    """(kind, model file, model) of each trained fixed-point model."""
    path = fixed_model_files[request.param]
    return request.param, path, pocketnn.load(path)


@pytest.mark.gcc
@pytest.mark.slow
def test_trained_fixed_point_model_is_bit_exact_on_all_mnist_test_images(tmp_path, mnist, trained):
    kind, path, model = trained
    assert all(layer.config.frac_bits == FRAC_BITS for layer in model.layers if layer.parameters())
    _, source = export_c(path, tmp_path, f"fixed_{kind}")
    exe = compile_host(source, tmp_path, f"fixed_{kind}")
    scores, classes = host_predict(exe, mnist.test_images, 10)
    expected = model.scores(mnist.test_images)
    np.testing.assert_array_equal(scores, expected)
    np.testing.assert_array_equal(classes, np.argmax(expected, axis=1))
    assert (classes == mnist.test_labels).mean() > 0.5  # trained, not a trivial model


@pytest.mark.arm
@pytest.mark.slow
def test_trained_fixed_point_model_on_cortex_m0_is_integer_only_and_bit_exact(
    tmp_path, mnist, trained
):
    kind, path, _ = trained
    check_on_cortex_m0(path, tmp_path, mnist.test_images[:MCU_IMAGES], f"fixed_{kind}")


@pytest.mark.arm
@pytest.mark.slow
def test_trained_fixed_point_model_footprint_fits_a_pico(trained):
    kind, path, model = trained
    report = footprint_report(path, "net", with_training=False, label=f"fixed-point {kind}")
    (build_,) = report.builds
    assert build_.model_bss >= sum(plan_buffers(plan_stages(model)).sizes)
    assert build_.model_rodata >= 2 * model.n_params  # int16 weights, no bias, in flash
    assert build_.ram < 16 * 1024 and 0 < build_.stack < 1024
    verdict = f"- fixed-point {kind} inference: fits RP2040 (Raspberry Pi Pico): flash "
    assert verdict in str(report)
