"""The ``predict`` command: classify image files with a saved model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..datasets import CLASSES
from ..io.model_file import load_checkpoint
from .images import read_images
from .presets import PAPER_ARCHS


def cmd_predict(args: argparse.Namespace) -> int:
    """Print one ``file: class (name)`` line per image; ``file[i]`` for files of several."""
    model, state, _ = load_checkpoint(args.model)
    classes = None
    if state and state.get("dataset") in PAPER_ARCHS:
        classes = CLASSES[state["dataset"]]
    for name in args.files:
        images = read_images(Path(name))
        if args.invert:
            images = 255 - images
        for i, cls in enumerate(model.predict(images)):
            label = f" ({classes[cls]})" if classes else ""
            where = f"{name}[{i}]" if images.shape[0] > 1 else name
            print(f"{where}: {cls}{label}")
    return 0
