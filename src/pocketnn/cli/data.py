"""Where a command's samples come from: a named dataset (``--dataset``) or the user's own
(``--data FILE``), the flags that say how to read and split them, and the shape the model
sees them in."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..datasets import Dataset, load_dataset
from ..datasets.split import split_validation
from ..datasets.userdata import load_user_data
from .errors import CLIError

SPLIT_DEFAULTS = {"label_column": "label", "test_percent": 20, "split_seed": 0}
"""How ``--data`` is read and split when neither a flag nor the model file says."""


def add_data_arguments(parser: argparse.ArgumentParser, datasets: list[str]) -> None:
    """``--dataset NAME | --data FILE`` and the flags that read and split a user's data."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=datasets)
    source.add_argument(
        "--data", help="your own data: an .npz, a .csv or a folder of class folders of PNGs"
    )
    parser.add_argument("--data-dir", help="folder holding the four idx files (raw or .gz)")
    parser.add_argument("--label-column", help="CSV: the label column's name (default label)")
    parser.add_argument(
        "--test-percent",
        type=int,
        help="CSV or image folder without test/: percent of samples held out for testing "
        "(default 20)",
    )
    parser.add_argument(
        "--split-seed", type=int, help="seed of the test and validation splits (default 0)"
    )


def split_settings(args: argparse.Namespace, saved: dict[str, Any] | None = None) -> dict:
    """How to read and split ``--data``: flags first, then a model file's record, then
    the defaults (so ``evaluate`` sees the test split its model was trained against)."""
    saved = saved or {}
    return {
        key: next(v for v in (getattr(args, key, None), saved.get(key), default) if v is not None)
        for key, default in SPLIT_DEFAULTS.items()
    }


def load_data(
    args: argparse.Namespace, saved: dict[str, Any] | None = None, verbose: bool = False
) -> Dataset:
    """The dataset ``--dataset`` names or the user's ``--data``."""
    if args.data is None:
        return load_dataset(args.dataset, data_dir=args.data_dir, verbose=verbose)
    if args.data_dir is not None:
        raise CLIError("--data-dir is for --dataset's idx files; --data names the data itself")
    return load_user_data(args.data, **split_settings(args, saved))


def data_name(args: argparse.Namespace) -> str:
    """What the data is called in logs and messages."""
    return args.dataset if args.data is None else str(args.data)


def data_path(args: argparse.Namespace) -> str | None:
    """``--data`` as an absolute path (how a model file records it), or None."""
    return None if args.data is None else str(Path(args.data).resolve())


class ModelArrays(NamedTuple):
    """The training, validation (None without ``--val``) and test samples a model sees."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray


def model_arrays(
    data: Dataset, input_shape: tuple[int, ...], val: int, split_seed: int, where: str
) -> ModelArrays:
    """``data`` in the model's input shape, ``val`` training samples held out (seeded by
    ``split_seed``) for validation."""
    x, y = data.train_images, data.train_labels
    x_val = y_val = None
    if val < 0 or val >= len(y):
        raise CLIError(f"--val {val}: must lie in 0..{len(y) - 1}, the training samples")
    if val:
        x, y, x_val, y_val = split_validation(x, y, val, split_seed)
        x_val = as_input(x_val, input_shape, where)
    x_test = as_input(data.test_images, input_shape, where)
    return ModelArrays(as_input(x, input_shape, where), y, x_val, y_val, x_test, data.test_labels)


def as_input(x: np.ndarray, input_shape: tuple[int, ...], where: str) -> np.ndarray:
    """Samples in the shape the model takes: an MLP sees each image flattened."""
    if x.shape[1:] == tuple(input_shape):
        return x
    if int(np.prod(x.shape[1:])) != int(np.prod(input_shape)):
        raise CLIError(
            f"{where}: samples of shape {x.shape[1:]} do not fit the model's input "
            f"{tuple(input_shape)}"
        )
    return x.reshape(len(x), *input_shape)
