"""Training hyperparameters: the paper's networks, the presets, and how flags override them."""

from __future__ import annotations

import argparse

from .errors import CLIError

PAPER_ARCHS = {"mnist": "784-100-50-10", "fashion-mnist": "784-200-100-50-10"}
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
}
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
}


def settings(args: argparse.Namespace) -> dict:
    """Resolve preset then explicit flags into one dict of hyperparameters (``arch`` is
    None for ``--data`` without ``--arch``: the data's widths decide it)."""
    dataset = args.dataset
    presets = PRESETS[args.preset or "paper"]
    preset = presets.get(dataset) or dict(presets["mnist"], epochs=OWN_DATA_EPOCHS)
    merged = dict(PAPER_DEFAULTS, arch=PAPER_ARCHS.get(dataset), **preset)
    for key in list(merged):
        value = getattr(args, key, None)
        if value is not None:
            merged[key] = value
    return merged


def parse_arch(text: str) -> list[int]:
    """Layer widths from the ``--arch`` notation, e.g. ``784-100-50-10``."""
    try:
        dims = [int(part) for part in text.split("-")]
    except ValueError:
        raise CLIError(f"--arch must look like 784-100-50-10, got {text!r}") from None
    if len(dims) < 2 or min(dims) < 1:
        raise CLIError(f"--arch needs at least two positive widths, got {text!r}")
    return dims
