"""The ``plot`` command: training curves of one or more runs from their JSON-lines logs."""

from __future__ import annotations

import argparse
from pathlib import Path

from .logs import read_log


def run_label(path: Path) -> str:
    """``runs/mnist-seed1.log.jsonl`` -> ``mnist-seed1``."""
    return path.name.removesuffix(".jsonl").removesuffix(".log")


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw accuracy and loss per epoch of every log given, on one figure."""
    from ..viz import plot_curves

    runs: dict[str, list[dict]] = {}
    for name in args.logs:
        label = run_label(Path(name))
        while label in runs:  # two runs of the same name in different folders
            label = f"{Path(name).parent.name}/{label}" if "/" not in label else label + "'"
        runs[label] = read_log(name)
    plot_curves(runs, args.out, title=args.title)
    print(f"curves of {len(runs)} run(s) saved to {args.out}")
    return 0
