"""What the commands tell people about a model: percentages, confusion matrix, summary."""

from __future__ import annotations

import numpy as np

from ..nn.layers import Dense
from ..nn.model import Sequential


def percent(correct: int, total: int) -> str:
    """``correct / total`` as a percentage with two decimals, for people only."""
    return f"{100 * correct / total:.2f} %"


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]`` as an int64 (n_classes, n_classes) matrix."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return cm


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def describe(model: Sequential, state: dict | None) -> str:
    """A human-readable summary of a model: layers, parameters, value ranges.

    The training record is printed as found; the last test accuracy only when the file
    holds it as two integers (the record is the file's, not necessarily pocketnn's).
    """
    arch = (state or {}).get("arch") or "-".join(map(str, model.dims))
    lines = [f"architecture: {arch}", f"parameters: {model.n_params}"]
    for layer in model.layers:
        shapes = f"{_shape(layer.input_shape)} -> {_shape(layer.output_shape)}"
        activation = getattr(layer, "activation_name", None)
        params = layer.parameters()
        if isinstance(layer, Dense):
            text = f"  {layer.name}: {layer.n_in} -> {layer.n_out}"
        else:
            text = f"  {layer.name}: {type(layer).__name__} {shapes}"
        if activation:
            text += f", {activation}"
        if params:
            W, b = params["W"], params["b"]
            text += (
                f", W {W.dtype} [{W.min()}, {W.max()}], b [{b.min()}, {b.max()}], "
                f"{W.size + b.size} params, clamp ±{layer.weight_clamp}"
            )
        lines.append(text)
    if state:
        lines.append(
            f"training: {state.get('algorithm')} on {state.get('dataset') or state.get('data')}, "
            f"{state.get('epoch')} epochs done, seed {state.get('seed')}, "
            f"batch {state.get('batch_size')}, lr_inv {state.get('lr_inv')}"
        )
        history = state.get("history")
        last = history[-1] if isinstance(history, list) and history else None
        counts = (
            [last.get(k) for k in ("test_correct", "test_total")] if isinstance(last, dict) else []
        )
        if len(counts) == 2 and all(type(c) is int for c in counts) and counts[1] > 0:
            lines.append(f"last test accuracy: {percent(*counts)}")
    return "\n".join(lines)
