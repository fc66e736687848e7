"""The ``info`` command: the summary of a saved model (architecture, ranges, training)."""

from __future__ import annotations

import argparse

from ..io.model_file import load_checkpoint
from .errors import about
from .report import describe


def cmd_info(args: argparse.Namespace) -> int:
    """Print ``describe`` of the model file and its training state."""
    model, state, _ = load_checkpoint(args.model)
    with about(args.model):  # a training record of unexpected shape is the file's fault
        text = describe(model, state)
    print(text)
    return 0
