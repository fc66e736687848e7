"""pocketnn: integer-only training and inference of neural networks (PocketNN).

The public API in one place::

    from pocketnn import build_mlp, Trainer, load_dataset, save, load
"""

from .intmath import IntegerOverflowError, configure
from .layers import Dense
from .model import ModelFileError, Sequential, build_mlp, load, load_checkpoint, save
from .train import EpochResult, Trainer

__version__ = "0.1.0"

__all__ = [
    "Dense",
    "EpochResult",
    "IntegerOverflowError",
    "ModelFileError",
    "Sequential",
    "Trainer",
    "build_mlp",
    "configure",
    "load",
    "load_checkpoint",
    "save",
]
