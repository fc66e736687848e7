"""Integer CNNs end to end: architectures, every learning rule, training features, files."""

from __future__ import annotations

import numpy as np
import pytest

import pocketnn
from pocketnn import Trainer
from pocketnn.cli import main
from pocketnn.nn.architecture import ArchitectureError, build, calibrate
from pocketnn.train.augment import Augment
from pocketnn.train.rules import LocalLosses
from pocketnn.train.seeding import spread_init

SHAPE = (1, 28, 28)


RECIPE = dict(  # the scaling-layer recipe: normalised steps (grad_bits), L2 targets
    lr_inv=32,
    batch_size=32,
    grad_bits=8,
    lr_double_every=0,
    rounding="stochastic",
    target_value=32,
)


def small_cnn(seed: int = 1, x=None):
    model = build("c4k3-p2-c8k3s2-f16-10", SHAPE)
    spread_init(model, seed)
    if x is not None:
        calibrate(model, x[:64])
    return model


@pytest.mark.parametrize(
    "arch, message",
    [
        ("c8k30p0-10", "conv1: kernel 30 is larger than its input 28x28"),
        ("c0k3-10", "conv1: out_channels must be an integer >= 1"),
        ("c8k3-p64-10", "pool1: pool size 64 is larger than its input"),
        ("c8k3-q2-10", "q2: not a layer"),
        ("c8k3-f10", "must end with the number of classes"),
        ("f10-c8k3-10", "c8k3: a convolution needs an image input"),
    ],
)
def test_impossible_architectures_are_refused_naming_the_layer(arch, message):
    with pytest.raises(ArchitectureError, match=message):
        build(arch, SHAPE)


def test_a_flatten_size_that_does_not_match_is_refused():
    from pocketnn.nn.layers import Dense, Flatten
    from pocketnn.nn.model import Sequential

    with pytest.raises(ValueError, match="fc1: expects input of shape 100 but flatten gives 196"):
        Sequential([Flatten(4, 7, 7, name="flatten"), Dense(100, 10, name="fc1")])


def test_the_builder_proves_every_sum_fits_int32():
    model = build("c32k3-c32k3-p2-c64k3-p2-f256-10", SHAPE)
    bound = 255
    for layer in model.layers:
        if layer.parameters():
            fan_in = layer.fans[0] if hasattr(layer, "fans") else layer.n_in
            assert bound * fan_in * layer.weight_clamp + layer.weight_clamp <= 2**31 - 1
            bound = 127


@pytest.mark.parametrize("rule", ["bp", "dfa", "local"])
def test_every_rule_trains_a_cnn_deterministically_and_resumes_to_the_same_bits(
    rule, mnist, tmp_path
):
    x, y = mnist.train_images[:600], mnist.train_labels[:600]
    kwargs = dict(RECIPE, rule=rule, seed=3, augment=Augment(SHAPE, 1, True))
    runs = []
    for _ in range(2):
        model = small_cnn(x=x)
        trainer = Trainer(model, **kwargs)
        trainer.fit(x, y, 2)
        runs.append([p.copy() for layer in model.layers for p in layer.parameters().values()])
    half = Trainer(small_cnn(x=x), **kwargs)
    half.fit(x, y, 1)
    half.save(tmp_path / "c.npz")
    resumed = Trainer.load(tmp_path / "c.npz")
    assert isinstance(resumed.rule, type(half.rule)) and resumed.augment == half.augment
    resumed.fit(x, y, 2)
    runs.append([p for layer in resumed.model.layers for p in layer.parameters().values()])
    for other in runs[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(runs[0], other))
    if rule == "local":  # the heads learn too, and are saved with the run
        assert set(resumed.rule.arrays()) == set(half.rule.arrays())


@pytest.mark.slow
def test_backprop_trains_a_small_cnn_on_real_mnist(mnist):
    """A 10,000-image epoch of integer backprop through scaling layers: well above chance."""
    x, y = mnist.train_images[:10000], mnist.train_labels[:10000]
    model = small_cnn(x=x)
    trainer = Trainer(model, rule="bp", seed=1, **RECIPE)
    trainer.fit(x, y, 1)
    assert trainer.score(mnist.test_images, mnist.test_labels) > 6000  # chance: 1,000


def test_local_heads_pool_until_small_enough():
    model = build("c8k3-c8k3-10", SHAPE)
    rule = LocalLosses(head_inputs=512)
    rule.bind(model, 0)
    head = rule.heads[0]
    assert [type(layer).__name__ for layer in head] == ["MaxPool2D", "Flatten", "Dense", "Scale"]
    assert head[2].n_in <= 512


def test_validation_decides_the_plateau_and_early_stop(mnist):
    x, y = mnist.train_images[:400], mnist.train_labels[:400]
    trainer = Trainer(
        small_cnn(x=x),
        rule="bp",
        lr_inv=32,
        batch_size=40,
        grad_bits=8,
        lr_double_every=0,
        plateau=(1, 3),
        target_value=32,
        seed=1,
    )
    history = trainer.fit(x, y, 6, x_val=x[:100], y_val=y[:100], early_stop=2)
    scores = [r.val_correct for r in history]
    for r in history[1:]:  # lr_inv grew only by whole factors of 3
        boosts = trainer.optimizer.schedule_state["boosts"]
        assert r.lr_inv in {32 * 3**k for k in range(boosts + 1)}
    assert trainer.selected().val_correct == max(scores)
    with pytest.raises(ValueError, match="validation"):
        trainer.fit(x, y, 9, early_stop=1)


def test_augmentation_shifts_within_the_padding_and_flips():
    rng = np.random.default_rng(0)
    img = np.zeros((1, 1, 5, 5), dtype=np.uint8)
    img[0, 0, 2, 2] = 9
    seen = set()
    for _ in range(200):
        out = Augment((1, 5, 5), shift=1)(img, rng)
        (yy,), (xx,) = np.nonzero(out[0, 0])
        seen.add((int(yy) - 2, int(xx) - 2))
    assert seen == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    line = np.arange(4, dtype=np.uint8).reshape(1, 4)
    flips = {tuple(Augment((1, 1, 4), 0, True)(line, rng)[0]) for _ in range(50)}
    assert flips == {(0, 1, 2, 3), (3, 2, 1, 0)}


@pytest.mark.slow
def test_cli_trains_a_cnn_with_validation_and_resumes(tmp_path, capsys):
    out = tmp_path / "cnn.npz"
    common = [
        "train",
        "--dataset",
        "mnist",
        "--arch",
        "c4k3-p2-10",
        "--rule",
        "bp",
        "--activation",
        "leaky_relu8",
        "--lr-inv",
        "32",
        "--grad-bits",
        "8",
        "--target-value",
        "32",
        "--val",
        "59000",
        "--augment",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main([*common, "--epochs", "1"]) == 0
    assert "best validation accuracy" in capsys.readouterr().out
    resume = ["train", "--dataset", "mnist", "--out", str(out), "--resume", "--epochs", "2"]
    assert main([*resume, "--augment", "1,flip"]) == 2  # the saved run shifts, never flips
    assert "--augment 1,flip (saved:" in capsys.readouterr().err
    assert main([*resume, "--augment", "1", "--quiet"]) == 0  # the same flag as the run's
    state = pocketnn.load_checkpoint(out)[1]
    assert state["epoch"] == 2 and state["val"] == 59000 and state["arch"] == "c4k3-p2-10"
    assert main(["info", str(out)]) == 0
    assert "Conv2D 1x28x28 -> 4x28x28" in capsys.readouterr().out
