"""The ``evaluate`` command: a saved model's test accuracy and confusion matrix."""

from __future__ import annotations

import argparse

import numpy as np

from ..io.model_file import load_model_file
from .data import as_input, data_name, load_data
from .errors import CLIError, about
from .report import confusion_matrix, percent


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Print the test accuracy and the confusion matrix, one row per true class; with
    ``--plot FILE`` also save the matrix as an image."""
    model, state, _, spec = load_model_file(args.model)
    data = load_data(args, state)
    name = data_name(args)
    if model.n_classes != len(data.classes):
        raise CLIError(
            f"{args.model}: the model has {model.n_classes} classes, {name} has {len(data.classes)}"
        )
    with about(args.model):  # a shape or an overflow names the data or layer; this, the model
        x = as_input(data.test_images, model.input_shape, name)
        spec.check(data.test_images, name)
        pred = model.predict(x)
    cm = confusion_matrix(data.test_labels, pred, model.dims[-1])
    correct = int(np.trace(cm))
    print(f"{name} test accuracy: {percent(correct, len(pred))} ({correct}/{len(pred)})")
    print("confusion matrix (rows: true class, columns: predicted)")
    width = max(5, len(str(cm.max())) + 1)
    print(" " * 12 + "".join(f"{j:>{width}d}" for j in range(cm.shape[1])))
    for i, row in enumerate(cm):
        label = data.classes[i][:10] if i < len(data.classes) else str(i)
        print(f"{label:>10s}  " + "".join(f"{v:>{width}d}" for v in row))
    if args.plot:
        from ..viz import plot_confusion

        classes = [data.classes[i] if i < len(data.classes) else str(i) for i in range(len(cm))]
        plot_confusion(cm, classes, args.plot, title=f"{args.model} on {name}")
        print(f"confusion matrix saved to {args.plot}")
    return 0
