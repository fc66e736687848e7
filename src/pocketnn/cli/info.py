"""The ``info`` command: the summary of a saved model (architecture, ranges, training)."""

from __future__ import annotations

import argparse

from ..io.model_file import load_checkpoint
from .report import describe


def cmd_info(args: argparse.Namespace) -> int:
    """Print ``describe`` of the model file and its training state."""
    model, state, _ = load_checkpoint(args.model)
    print(describe(model, state))
    return 0
