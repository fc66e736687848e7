"""A sequential integer network: forward, predict, and an integer-only model file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_write_bytes
from .intmath import single_thread_blas
from .layers import WEIGHT_CLAMP, Dense

FORMAT_NAME = "pocketnn-model"
FORMAT_VERSION = 2  # 2: the sha256 covers the metadata too


class ModelFileError(ValueError):
    """A model file is missing, corrupt, or of a format this version cannot read."""


class Sequential:
    """Layers applied in order; the last layer's output is the class scores.

    Parameters
    ----------
    layers : the :class:`~pocketnn.layers.Dense` layers, each ``n_in`` matching the previous
        ``n_out``
    """

    def __init__(self, layers: Sequence[Dense]) -> None:
        if not layers:
            raise ValueError("a model needs at least one layer")
        for prev, layer in zip(layers, layers[1:]):
            if prev.n_out != layer.n_in:
                raise ValueError(
                    f"{layer.name}: expects {layer.n_in} inputs but {prev.name} gives {prev.n_out}"
                )
        self.layers = list(layers)

    @property
    def dims(self) -> list[int]:
        """Layer widths, input first, e.g. ``[784, 100, 50, 10]``."""
        return [self.layers[0].n_in] + [layer.n_out for layer in self.layers]

    @property
    def n_params(self) -> int:
        return sum(layer.W.size + layer.b.size for layer in self.layers)

    def __repr__(self) -> str:
        return f"Sequential({'-'.join(map(str, self.dims))}, {self.layers[0].activation_name})"

    def check_input(self, x: np.ndarray) -> np.ndarray:
        """Refuse a non-integer or wrongly shaped batch with a clear error."""
        x = np.asarray(x)
        if x.dtype.kind not in "iu":
            raise TypeError(f"input must be an integer array, got dtype {x.dtype}")
        if x.ndim != 2 or x.shape[1] != self.dims[0]:
            raise ValueError(f"input must have shape (N, {self.dims[0]}), got {x.shape}")
        return x

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """Run the network and keep what training needs.

        Returns
        -------
        output : int64 (N, n_classes)
        cache : per layer, ``(a_prev, g)``: its input and its gradient-inverse
        """
        a = self.check_input(x)
        cache = []
        for layer in self.layers:
            y, g = layer.forward(a)
            cache.append((a, g))
            a = y
        return a, cache

    def scores(self, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """Class scores (the last layer's integer output) for every row of ``x``.

        Rows go through in batches of ``batch_size``: large enough for efficient products,
        small enough to bound the memory of the intermediate activations.
        """
        x = self.check_input(x)
        out = np.empty((x.shape[0], self.dims[-1]), dtype=np.int64)
        with single_thread_blas():
            for start in range(0, x.shape[0], batch_size):
                a = x[start : start + batch_size]
                for layer in self.layers:
                    a = layer.forward(a)[0]
                out[start : start + batch_size] = a
        return out

    def predict(self, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """Predicted class per row: the first index of the highest score."""
        return np.argmax(self.scores(x, batch_size), axis=1)

    def count_correct(self, x: np.ndarray, labels: np.ndarray) -> int:
        """How many rows of ``x`` are predicted as their label."""
        return int(np.count_nonzero(self.predict(x) == np.asarray(labels)))

    def config(self) -> list[dict[str, Any]]:
        return [
            {
                "name": layer.name,
                "n_in": layer.n_in,
                "n_out": layer.n_out,
                "activation": layer.activation_name,
                "weight_clamp": layer.weight_clamp,
            }
            for layer in self.layers
        ]

    @classmethod
    def from_config(cls, config: Sequence[dict[str, Any]]) -> Sequential:
        return cls([Dense(**spec) for spec in config])


def build_mlp(
    dims: Sequence[int],
    activation: str = "pocket_tanh",
    output_activation: str | None = None,
    weight_clamp: int = WEIGHT_CLAMP,
) -> Sequential:
    """An MLP with layers ``fc1..fcL`` for widths ``dims`` (input first), all weights zero.

    ``build_mlp([784, 100, 50, 10])`` is the paper's MNIST network.
    """
    dims = [int(d) for d in dims]
    if len(dims) < 2:
        raise ValueError(f"an architecture needs an input and an output width, got {dims}")
    n = len(dims) - 1
    return Sequential(
        [
            Dense(
                dims[i],
                dims[i + 1],
                (output_activation or activation) if i == n - 1 else activation,
                name=f"fc{i + 1}",
                weight_clamp=weight_clamp,
            )
            for i in range(n)
        ]
    )


def _digest(arrays: dict[str, np.ndarray], described: dict[str, Any]) -> str:
    """sha256 over the metadata (all but the digest itself) and every array."""
    h = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(
    path: str | os.PathLike,
    model: Sequential,
    training: dict[str, Any] | None = None,
    extra_arrays: dict[str, np.ndarray] | None = None,
) -> None:
    """Save ``model`` (and optional training state) atomically as an integer-only ``.npz``.

    Every array in the file is an integer array; the metadata is UTF-8 JSON stored as a
    uint8 array and carries a sha256 of itself and all the arrays, so corruption or an edit
    is detected on load.
    """
    arrays: dict[str, np.ndarray] = {}
    for i, layer in enumerate(model.layers):
        arrays[f"layer{i}.W"] = layer.W
        arrays[f"layer{i}.b"] = layer.b
    for key, value in (extra_arrays or {}).items():
        value = np.asarray(value)
        if value.dtype.kind not in "iu":
            raise TypeError(f"{key}: only integer arrays can be saved, got {value.dtype}")
        arrays[f"train.{key}"] = value
    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "layers": model.config(),
        "training": training,
    }
    # round-trip through JSON first, so the digest sees exactly what load will read
    meta = json.loads(json.dumps(meta))
    meta["sha256"] = _digest(arrays, meta)
    buf = io.BytesIO()
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(
    path: str | os.PathLike,
) -> tuple[Sequential, dict[str, Any] | None, dict[str, np.ndarray]]:
    """Load a model file: the model, its training state (or None) and its training arrays."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"{path}: not a readable pocketnn model file ({exc})") from None
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFileError(f"{path}: missing or unreadable metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: not a {FORMAT_NAME} file")
    if meta.get("version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: format version {meta.get('version')} is not supported "
            f"(this pocketnn reads version {FORMAT_VERSION})"
        )
    described = {key: value for key, value in meta.items() if key != "sha256"}
    if meta.get("sha256") != _digest(arrays, described):
        raise ModelFileError(f"{path}: checksum mismatch, the file is corrupt or was altered")
    if not isinstance(meta.get("training"), (dict, type(None))):
        raise ModelFileError(f"{path}: the training state is not a record")
    try:
        model = Sequential.from_config(meta["layers"])
        for i, layer in enumerate(model.layers):
            layer.set_params(arrays[f"layer{i}.W"], arrays[f"layer{i}.b"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: inconsistent model description ({exc})") from None
    train_arrays = {
        key.removeprefix("train."): value
        for key, value in arrays.items()
        if key.startswith("train.")
    }
    return model, meta.get("training"), train_arrays


def load(path: str | os.PathLike) -> Sequential:
    """Load the model saved by :func:`save` (training state, if any, is ignored)."""
    return load_checkpoint(path)[0]
