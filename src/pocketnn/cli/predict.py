"""The ``predict`` command: classify image files with a saved model."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..datasets import CLASSES
from ..io.model_file import load_checkpoint
from .errors import CLIError, about
from .images import SIDE, read_images
from .presets import PAPER_ARCHS


def check_takes_images(model, path) -> None:
    """Refuse a model whose input is not one 28x28 image, before any image is read."""
    if math.prod(model.input_shape) != SIDE * SIDE:
        raise CLIError(
            f"{path}: the model takes {math.prod(model.input_shape)} inputs per sample, "
            f"not a {SIDE}x{SIDE} image ({SIDE * SIDE})"
        )


def cmd_predict(args: argparse.Namespace) -> int:
    """Print one ``file: class (name)`` line per image; ``file[i]`` for files of several."""
    model, state, _ = load_checkpoint(args.model)
    check_takes_images(model, args.model)
    classes = None
    if state and isinstance(state.get("dataset"), str) and state["dataset"] in PAPER_ARCHS:
        classes = CLASSES[state["dataset"]]
    for name in args.files:
        images = read_images(Path(name))
        if args.invert:
            images = 255 - images
        with about(f"{args.model} on {name}"):  # an overflow names the layer; this, the files
            predicted = model.predict(images.reshape(-1, *model.input_shape))
        for i, cls in enumerate(predicted):
            label = f" ({classes[cls]})" if classes else ""
            where = f"{name}[{i}]" if images.shape[0] > 1 else name
            print(f"{where}: {cls}{label}")
    return 0
