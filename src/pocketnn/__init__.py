"""pocketnn: integer-only training and inference of neural networks (PocketNN).

The public API in one place::

    from pocketnn import build_mlp, Trainer, load_dataset, save, load
"""

from importlib.metadata import PackageNotFoundError, version

from .core.context import configure
from .core.overflow import IntegerOverflowError
from .datasets import load_dataset
from .errors import PocketnnError
from .io.limits import input_limit
from .io.model_file import ModelFileError, load, load_checkpoint, load_model_file, save
from .nn.layers import Dense
from .nn.model import Sequential, build_mlp
from .train.optimizer import IntegerSGD
from .train.rules import DFA, Backprop
from .train.trainer import EpochResult, Trainer

try:
    __version__ = version("pocketnn")  # the one version string: pyproject.toml's
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "DFA",
    "Backprop",
    "Dense",
    "EpochResult",
    "IntegerOverflowError",
    "IntegerSGD",
    "ModelFileError",
    "PocketnnError",
    "Sequential",
    "Trainer",
    "build_mlp",
    "configure",
    "input_limit",
    "load",
    "load_checkpoint",
    "load_dataset",
    "load_model_file",
    "save",
]
