"""The model file: an integer-only ``.npz`` with typed layers and an integrity checksum.

Format 3 (written by this version) stores, besides the arrays ``layers.{i}.{param}``, one
JSON metadata record (as a uint8 array) with every layer's type and typed config, the
optional training state, and a sha256 over the metadata and every array. Format 2 (the
release before: dense layers only, arrays ``layer{i}.W``/``.b``) still loads; anything else
is refused with a clear error. Files are never unpickled, and are read within the input
limit (:mod:`pocketnn.io.npz`): no declared size is trusted before it is checked.

The checksum is not keyed: it detects corruption, not a deliberate edit.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import PocketnnError
from ..nn.inputs import InputSpec
from ..nn.model import Sequential
from .atomic import atomic_write_bytes
from .npz import read_npz

FORMAT_NAME = "pocketnn-model"
FORMAT_VERSION = 3  # 3: typed layers (type + config), arrays named layers.{i}.{param}
READABLE_VERSIONS = (2, 3)


class ModelFileError(PocketnnError, ValueError):
    """A model file is missing, corrupt, or of a format this version cannot read."""


def digest(arrays: dict[str, np.ndarray], described: dict[str, Any]) -> str:
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
    input_spec: InputSpec | None = None,
) -> None:
    """Save ``model`` (and optional training state) atomically as an integer-only ``.npz``.

    Every array in the file is an integer array; the metadata is UTF-8 JSON stored as a
    uint8 array and carries a sha256 of itself and all the arrays, so corruption is
    detected on load. ``input_spec`` (the input type and sample shape) is stored as the
    optional field ``input``; files without it mean uint8 inputs.
    """
    atomic_write_bytes(path, to_bytes(model, training, extra_arrays, input_spec))


def to_bytes(
    model: Sequential,
    training: dict[str, Any] | None = None,
    extra_arrays: dict[str, np.ndarray] | None = None,
    input_spec: InputSpec | None = None,
) -> bytes:
    """The bytes :func:`save` writes (to measure or check a file before writing it)."""
    with model.lock.reading():  # the parameters of one moment, never half a step
        arrays: dict[str, np.ndarray] = {}
        for i, layer in enumerate(model.layers):
            for name, value in layer.parameters().items():
                arrays[f"layers.{i}.{name}"] = value
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
        if input_spec is not None:  # optional: format 3 files written before it still load
            meta["input"] = input_spec.to_json()
        # round-trip through JSON first, so the digest sees exactly what load will read
        meta = json.loads(json.dumps(meta))
        meta["sha256"] = digest(arrays, meta)
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    return buf.getvalue()


# What a checksummed but deliberately edited description can make a constructor raise.
_DESCRIPTION_ERRORS = (
    KeyError,
    TypeError,
    ValueError,
    AttributeError,
    IndexError,
    OverflowError,
    MemoryError,
    RecursionError,
)


def _why(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__


def _build(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Sequential:
    """The model a verified file describes, in either readable version."""
    if meta["version"] == 2:  # dense layers: config = Dense's keywords, arrays layer{i}.W/.b
        model = Sequential.from_config([{"type": "Dense", **spec} for spec in meta["layers"]])
        for i, layer in enumerate(model.layers):
            layer.set_parameters({"W": arrays[f"layer{i}.W"], "b": arrays[f"layer{i}.b"]})
        return model
    model = Sequential.from_config(meta["layers"])
    for i, layer in enumerate(model.layers):
        names = layer.parameters()
        if names:
            layer.set_parameters({name: arrays[f"layers.{i}.{name}"] for name in names})
    return model


class ModelFile(NamedTuple):
    """Everything a model file holds."""

    model: Sequential
    training: dict[str, Any] | None
    arrays: dict[str, np.ndarray]
    input_spec: InputSpec
    """The stored input type and sample shape; uint8 and the model's shape when absent."""


def load_checkpoint(
    path: str | os.PathLike,
) -> tuple[Sequential, dict[str, Any] | None, dict[str, np.ndarray]]:
    """Load a model file: the model, its training state (or None) and its training arrays."""
    return load_model_file(path)[:3]


def load_model_file(path: str | os.PathLike) -> ModelFile:
    """Load a model file: model, training state, training arrays and input spec."""
    path = Path(path)
    arrays = read_npz(path, ModelFileError)
    meta_array = arrays.pop("meta", None)
    if meta_array is None or meta_array.dtype != np.uint8 or meta_array.ndim != 1:
        raise ModelFileError(f"{path}: missing or unreadable metadata")
    try:
        meta = json.loads(meta_array.tobytes().decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ModelFileError(f"{path}: missing or unreadable metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: not a {FORMAT_NAME} file")
    if meta.get("version") not in READABLE_VERSIONS:
        raise ModelFileError(
            f"{path}: format version {meta.get('version')} is not supported "
            f"(this pocketnn reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    described = {key: value for key, value in meta.items() if key != "sha256"}
    try:
        expected = digest(arrays, described)
    except (RecursionError, ValueError):  # metadata nested too deeply to encode again
        raise ModelFileError(f"{path}: unreadable metadata") from None
    if meta.get("sha256") != expected:
        raise ModelFileError(f"{path}: checksum mismatch, the file is corrupt or was altered")
    if not isinstance(meta.get("training"), (dict, type(None))):
        raise ModelFileError(f"{path}: the training state is not a record")
    try:
        model = _build(meta, arrays)
    except _DESCRIPTION_ERRORS as exc:
        raise ModelFileError(f"{path}: inconsistent model description ({_why(exc)})") from None
    train_arrays = {
        key.removeprefix("train."): value
        for key, value in arrays.items()
        if key.startswith("train.")
    }
    try:
        spec = InputSpec.default_for(model.input_shape)
        if "input" in meta:
            spec = InputSpec.from_json(meta["input"])
    except _DESCRIPTION_ERRORS as exc:
        raise ModelFileError(f"{path}: inconsistent input record ({_why(exc)})") from None
    if spec.size != math.prod(model.input_shape):
        raise ModelFileError(
            f"{path}: input shape {spec.shape} does not fit the model's {model.input_shape}"
        )
    return ModelFile(model, meta.get("training"), train_arrays, spec)


def load(path: str | os.PathLike) -> Sequential:
    """Load the model saved by :func:`save` (training state, if any, is ignored)."""
    return load_checkpoint(path)[0]
