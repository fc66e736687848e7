"""Reading the samples ``predict`` classifies for a model trained on ``--data``: rows of an
``.npz`` array or a CSV, or PNG images, in the model's recorded input type and shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..datasets.userdata import read_csv, read_png
from ..nn.inputs import InputSpec
from .errors import CLIError

SUFFIXES = (".npz", ".csv", ".png")


def read_samples(path: Path, spec: InputSpec, label_column: str) -> np.ndarray:
    """Samples (N, *spec.shape) from ``path``: the ``x`` (else ``x_test``) array of an .npz,
    a CSV's feature columns (its label column, if any, left out), or one PNG."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                key = next((k for k in ("x", "x_test") if k in npz.files), None)
                if key is None:
                    raise CLIError(f"{path}: no array x (or x_test) of samples to classify")
                x = npz[key]
        except (OSError, ValueError) as exc:
            raise CLIError(f"{path}: not a readable .npz of plain arrays ({exc})") from None
        if x.dtype.kind not in "iu":
            raise CLIError(f"{path}: {key} has dtype {x.dtype}; the model takes integers")
    elif suffix == ".csv":
        x = read_csv(path, label_column, labelled=False)[0]
    else:
        x = read_png(path)[None]
    if x.shape[1:] != spec.shape and x.shape == spec.shape:
        x = x[None]  # a single sample
    if x.shape[1:] != spec.shape:
        raise CLIError(f"{path}: samples of shape {x.shape[1:]}, but the model takes {spec.shape}")
    spec.check(x, str(path))
    return x.astype(np.dtype(spec.dtype))
