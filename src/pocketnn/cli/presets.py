"""Training hyperparameters: the paper's networks, the presets, and how flags override them."""

from __future__ import annotations

import argparse

from ..nn.architecture import is_mlp
from .errors import CLIError

PAPER_ARCHS = {"mnist": "784-100-50-10", "fashion-mnist": "784-200-100-50-10"}
FIXED_POINT_RECIPE = {
    # fixed-point layers, integer backprop (textbook order), momentum, softmax; 5,000
    # validation images
    "activation": "leaky_relu",
    "algorithm": "bp",
    "bp_weights": "current",
    "frac_bits": 10,
    "momentum": 3,
    "loss": "softmax",
    "batch_size": 32,
    "lr_double_every": 0,
    "rounding": "stochastic",
    "val": 5000,
}
PRESETS: dict[str, dict[str, dict]] = {
    # The paper's setting: pocket tanh everywhere, DFA, batch 20, lr_inv 1000 doubling every 10.
    # Epoch counts are the reference runs' lengths (pocketnn-algorithm.md: MNIST 50, Fashion 25).
    "paper": {
        "mnist": {"epochs": 50},
        "fashion-mnist": {"epochs": 25},
    },
    # The paper's networks and schedule with unbiased (stochastic) rounding of the weight
    # update; see the README's reproduction section for how it was chosen and what it gives.
    "best": {
        "mnist": {"epochs": 30, "rounding": "stochastic"},
        "fashion-mnist": {"epochs": 25, "rounding": "stochastic"},
    },
    # An integer CNN of fixed-point layers trained by integer backprop with momentum, a
    # step falling linearly to zero, softmax cross-entropy and augmentation; a validation
    # split reports the selected epoch next to the final one (README, "Integer CNNs").
    # The network and Fashion-MNIST's augmentation chosen on validation
    # (benchmarks/sweeps/cnn-search.toml, against the earlier c16k3-p2-c32k3-p2-f64-10);
    # Fashion-MNIST's steps halved after a seed diverged on validation (cnn-fashion.toml).
    "cnn": {
        dataset: {
            **FIXED_POINT_RECIPE,
            "arch": "c32k3-p2-c64k3-p2-f128-10",
            "lr_inv": 1 << 21 if dataset == "fashion-mnist" else 1 << 20,
            "augment": "1,flip" if dataset == "fashion-mnist" else "2",
            # more epochs validate higher: MNIST 20 against 15 (cnn-mnist-20.toml against
            # cnn-mnist.toml), Fashion-MNIST 40 against 15 (cnn-fashion-40.toml, cnn-fashion.toml)
            "epochs": 40 if dataset == "fashion-mnist" else 20,
        }
        for dataset in ("mnist", "fashion-mnist")
    },
}
# The paper's networks (same widths) as fixed-point layers with the same recipe; step size,
# augmentation and epochs chosen on validation by benchmarks/sweeps/frontier-*.toml
# (README, "Frontier").
PRESETS["frontier"] = {
    "mnist": {**FIXED_POINT_RECIPE, "lr_inv": 1 << 19, "augment": "1", "epochs": 15},
    # no augmentation; weight decay chosen on validation (frontier-fashion-decay.toml)
    "fashion-mnist": {**FIXED_POINT_RECIPE, "lr_inv": 1 << 20, "epochs": 25, "decay_inv": 1 << 17},
}
IMAGE_SHAPE = (1, 28, 28)
"""The shape of an MNIST or Fashion-MNIST image, as a CNN takes it."""
OWN_DATA_EPOCHS = 20
"""Epochs of a run on ``--data``; the preset's other settings are MNIST's."""
PAPER_DEFAULTS = {
    "activation": "pocket_tanh",
    "output_activation": None,
    "algorithm": "dfa",
    "batch_size": 20,
    "lr_inv": 1000,
    "lr_double_every": 10,
    "rounding": "trunc",
    "seed": 0,
    "decay_inv": 0,
    "grad_bits": 0,
    "target_value": 15,
    "val": 0,
    "augment": None,
    "plateau": None,
    "early_stop": 0,
    "frac_bits": 0,
    "momentum": 0,
    "loss": "l2",
    "bp_weights": "updated",
}


def settings(args: argparse.Namespace) -> dict:
    """Resolve preset then explicit flags into one dict of hyperparameters (``arch`` is
    None for ``--data`` without ``--arch``: the data's widths decide it)."""
    dataset = args.dataset
    presets = PRESETS[args.preset or "paper"]
    preset = presets.get(dataset) or dict(presets["mnist"], epochs=OWN_DATA_EPOCHS)
    merged = {**PAPER_DEFAULTS, "arch": PAPER_ARCHS.get(dataset), **preset}
    for key in list(merged):
        value = getattr(args, key, None)
        if value is not None:
            merged[key] = value
    return merged


def parse_arch(text: str) -> list[int] | str:
    """Layer widths from the MLP notation (``784-100-50-10``), or the CNN description itself
    (``c32k3-p2-f128-10``, checked fully when the model is built: see
    :mod:`pocketnn.nn.architecture`)."""
    if not is_mlp(text):
        if not text or not text.isascii():
            raise CLIError(f"--arch must look like 784-100-50-10 or c32k3-p2-f128-10, got {text!r}")
        return text
    dims = [int(part) for part in text.split("-")]
    if len(dims) < 2 or min(dims) < 1:
        raise CLIError(f"--arch needs at least two positive widths, got {text!r}")
    return dims


def parse_pair(flag: str, text: str | None) -> tuple[int, int] | None:
    """``"P,F"`` -> ``(P, F)`` (``--plateau 2,3``)."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
        raise CLIError(f"{flag} takes two whole numbers like 2,3, got {text!r}")
    return int(parts[0]), int(parts[1])


def parse_augment(text: str | None) -> tuple[int, bool] | None:
    """``"2"`` or ``"2,flip"`` -> ``(shift, flip)`` (``--augment``)."""
    if text is None:
        return None
    shift, _, rest = text.partition(",")
    if not (shift.isascii() and shift.isdigit()) or rest not in ("", "flip"):
        raise CLIError(f"--augment takes a shift like 2 or 2,flip, got {text!r}")
    return int(shift), rest == "flip"
