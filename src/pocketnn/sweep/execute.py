"""One run of a sweep, in the calling process: ``pocketnn train`` with the run's flags."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path

from ..cli.errors import CLIError
from ..core.context import configure
from ..train.trainer import EpochResult
from .spec import Run


def train_run(
    run: Run, model_path: Path, epoch_hook: Callable[[EpochResult], None] | None = None
) -> None:
    """Train ``run`` into ``model_path`` (and its log beside it), exactly as the command
    line ``run.argv(model_path)`` would; ``epoch_hook`` sees each epoch's figures after the
    model is saved. A checkpoint already in ``model_path`` (a run a kill interrupted) is
    resumed, not started again; ``train --resume`` refuses it if the spec has changed since.
    Raises what the command would report."""
    from ..cli.parser import build_parser

    resume = model_path.exists()
    args = build_parser().parse_args([*run.argv(model_path, resume), "--quiet"])
    args.epoch_hook = epoch_hook
    with configure(engine=args.engine, overflow=args.overflow):
        with contextlib.redirect_stdout(io.StringIO()):  # the sweep prints its own lines
            try:
                args.func(args)
            except CLIError as exc:
                if not (resume and str(exc).startswith("--resume")):
                    raise
                raise CLIError(f"{exc}; delete it to run it again from epoch 1") from None


def local_worker(run: Run, model_path: str) -> str | None:
    """A worker process's job: train the run; None, or the one-line error that stopped it."""
    try:
        train_run(run, Path(model_path))
    except Exception as exc:  # reported by the sweep, which goes on with the other runs
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None
