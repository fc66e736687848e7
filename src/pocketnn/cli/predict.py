"""The ``predict`` command: classify image files (or rows of a user's data) with a saved model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..datasets import CLASSES
from ..io.model_file import load_model_file
from .data import as_input
from .errors import about
from .images import read_images
from .presets import PAPER_ARCHS
from .samples import SUFFIXES, read_samples

PIXEL_MODEL = ("uint8", (28, 28))
"""What a model trained on MNIST or Fashion-MNIST takes: it reads PGM, PNG and idx files."""


def cmd_predict(args: argparse.Namespace) -> int:
    """Print one ``file: class (name)`` line per sample; ``file[i]`` for files of several."""
    model, state, _, spec = load_model_file(args.model)
    state = state or {}
    classes = state.get("classes")
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        classes = None  # the record is the file's: only a list of names is shown
    if isinstance(state.get("dataset"), str) and state["dataset"] in PAPER_ARCHS:
        classes = CLASSES[state["dataset"]]
    pixels = (spec.dtype, spec.shape) == PIXEL_MODEL or spec.shape == model.input_shape == (784,)
    for name in args.files:
        path = Path(name)
        if pixels and path.suffix.lower() not in (".npz", ".csv"):
            images = read_images(path)
            if args.invert:
                images = 255 - images
        elif path.suffix.lower() in SUFFIXES:
            images = read_samples(path, spec, state.get("label_column", "label"))
        else:
            raise ValueError(f"{path}: give an .npz, a .csv or a .png file to this model")
        with about(f"{args.model} on {name}"):  # an overflow names the layer; this, the files
            predicted = model.predict(as_input(images, model.input_shape, name))
        for i, cls in enumerate(predicted):
            label = f" ({classes[cls]})" if classes and cls < len(classes) else ""
            where = f"{name}[{i}]" if images.shape[0] > 1 else name
            print(f"{where}: {cls}{label}")
    return 0
