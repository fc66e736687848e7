"""The ``evaluate`` command: a saved model's test accuracy and confusion matrix."""

from __future__ import annotations

import argparse

import numpy as np

from ..datasets import load_dataset
from ..io.model_file import load_checkpoint
from .errors import CLIError, about
from .predict import check_takes_images
from .report import confusion_matrix, percent


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Print the test accuracy and the confusion matrix, one row per true class."""
    model, _, _ = load_checkpoint(args.model)
    check_takes_images(model, args.model)
    data = load_dataset(args.dataset, data_dir=args.data_dir)
    if model.n_classes != len(data.classes):
        raise CLIError(
            f"{args.model}: the model has {model.n_classes} classes, {args.dataset} has "
            f"{len(data.classes)}"
        )
    with about(args.model):  # an overflow names the layer; this adds the model file
        pred = model.predict(data.test_images.reshape(-1, *model.input_shape))
    cm = confusion_matrix(data.test_labels, pred, model.dims[-1])
    correct = int(np.trace(cm))
    print(f"{args.dataset} test accuracy: {percent(correct, len(pred))} ({correct}/{len(pred)})")
    print("confusion matrix (rows: true class, columns: predicted)")
    width = max(5, len(str(cm.max())) + 1)
    print(" " * 12 + "".join(f"{j:>{width}d}" for j in range(cm.shape[1])))
    for i, row in enumerate(cm):
        name = data.classes[i][:10] if i < len(data.classes) else str(i)
        print(f"{name:>10s}  " + "".join(f"{v:>{width}d}" for v in row))
    return 0
