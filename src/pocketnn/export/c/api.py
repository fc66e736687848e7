"""The public entry points: :func:`generate_c` (the text) and :func:`export_c` (the files)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...io.atomic import atomic_write_bytes
from ...io.model_file import load_model_file
from ...nn.inputs import InputSpec
from ...nn.model import Sequential
from .cnn_inference import generate_layered
from .cnn_planner import is_layered
from .ctext import check_name
from .inference import InferenceGenerator
from .planner import plan_layers
from .settings import DEFAULT_MAX_BATCH, DEFAULT_TARGET_VALUE, ExportError, ExportSettings
from .training import TrainingGenerator


def _load(model_or_path: Sequential | str | os.PathLike, input_spec: InputSpec | None):
    """The model, its training state and arrays, its input spec and a name for comments;
    ``input_spec`` overrides the file's (an in-memory model takes uint8 without it)."""
    if isinstance(model_or_path, Sequential):
        model = model_or_path
        spec = input_spec or InputSpec.default_for(model.input_shape)
        return model, None, {}, spec, "an in-memory model"
    path = Path(model_or_path)
    if not path.is_file():
        raise ExportError(f"{path}: no such model file")
    model, training, arrays, spec = load_model_file(path)
    return model, training, arrays, input_spec or spec, path.name


def _feedback_from_file(model: Sequential, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    keys = [f"feedback{i}" for i in range(len(model.layers) - 1)]
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ExportError(
            "--with-training needs the DFA feedback matrices, but the model file has no "
            f"{', '.join(missing)} (save it from a DFA training run, or pass feedback=...)"
        )
    return [arrays[k] for k in keys]


def generate_c(
    model_or_path: Sequential | str | os.PathLike,
    name: str = "model",
    with_training: bool = False,
    feedback: Sequence[np.ndarray] | None = None,
    max_batch: int | None = None,
    target_value: int | None = None,
    input_spec: InputSpec | None = None,
) -> dict[str, str]:
    """Generate the C source text of a model; returns ``{"NAME.h": ..., "NAME.c": ...}``.

    Parameters are those of :func:`export_c`.
    """
    name = check_name(name)
    model, training, arrays, spec, source = _load(model_or_path, input_spec)
    if is_layered(model):  # CNNs: inference only, on uint8 images
        return generate_layered(model, name, with_training, source)
    training = training or {}
    if max_batch is None:
        max_batch = int(training.get("batch_size", DEFAULT_MAX_BATCH))
    if target_value is None:
        target_value = int(training.get("target_value", DEFAULT_TARGET_VALUE))
    if not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
        raise ExportError(f"max_batch must be a positive integer, got {max_batch!r}")
    if with_training and feedback is None:
        if isinstance(model_or_path, Sequential):
            raise ExportError("with_training=True on an in-memory model needs feedback=[B1, ...]")
        feedback = _feedback_from_file(model, arrays)
    plans = plan_layers(
        model, with_training, feedback, int(max_batch), int(target_value), spec.dtype
    )
    cfg = ExportSettings(name, with_training, int(max_batch), int(target_value), source, spec.dtype)
    generator = TrainingGenerator if with_training else InferenceGenerator
    gen = generator(model, plans, cfg)
    return {f"{name}.h": gen.header(), f"{name}.c": gen.source()}


def export_c(
    model_or_path: Sequential | str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str = "model",
    with_training: bool = False,
    feedback: Sequence[np.ndarray] | None = None,
    max_batch: int | None = None,
    target_value: int | None = None,
    input_spec: InputSpec | None = None,
) -> list[Path]:
    """Write ``NAME.h`` and ``NAME.c`` for a model into ``out_dir`` (created if needed).

    Parameters
    ----------
    model_or_path : a :class:`~pocketnn.model.Sequential` or the path of a model file
    out_dir : directory for the two files (each written atomically)
    name : prefix of every public C symbol; must be a C identifier
    with_training : also generate ``NAME_train_step`` (one DFA step on a mini-batch)
    feedback : the DFA feedback matrices, one (n_classes, width) array per hidden layer;
        ``None`` takes them from the model file (``feedback0``, ``feedback1``, ...)
    max_batch : the largest batch ``NAME_train_step`` accepts (sizes its buffers); defaults
        to the file's training batch size, else 20
    target_value : the one-hot target value; defaults to the file's, else 15
    input_spec : the input type the C takes (``NAME_input_t``) and proves its bounds for;
        defaults to the file's (see :class:`~pocketnn.nn.inputs.InputSpec`), else uint8

    Returns
    -------
    The paths written, header first.

    Raises
    ------
    ExportError
        (a ``ValueError``) for a bad name, an unsupported activation, missing or misshapen
        feedback, or bounds beyond int64.
    pocketnn.ModelFileError
        for a missing or unreadable model file.
    """
    files = generate_c(
        model_or_path, name, with_training, feedback, max_batch, target_value, input_spec
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for filename, text in files.items():
        atomic_write_bytes(out / filename, text.encode())
        paths.append(out / filename)
    return paths
