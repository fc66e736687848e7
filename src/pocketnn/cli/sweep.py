"""The ``sweep`` command: runs over seeds and settings from a TOML spec, then the tables."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import CLIError


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run (or resume) the sweep of ``args.spec``; exit status 2 if a run failed."""
    from ..sweep import load_spec, run_sweep

    spec = load_spec(args.spec)
    out = Path(args.out) if args.out else spec.out
    if out is None:
        raise CLIError(f"{args.spec}: name the sweep's folder with --out (or out in [sweep])")
    if args.workers is not None and args.workers < 1:
        raise CLIError(f"--workers {args.workers}: at least one worker")
    workers = args.workers
    if workers is None and args.ray is None:
        workers = os.cpu_count() or 1  # on Ray: as many at a time as the cluster holds
    if args.table_only:
        from ..sweep.results import read_results
        from ..sweep.table import report

        print(report(spec.runs, read_results(out, spec.runs), spec.report_epochs), end="")
        return 0
    try:
        failed = run_sweep(spec, out, workers, args.ray)
    except KeyboardInterrupt:
        print(
            f"pocketnn: sweep interrupted; finished runs are recorded in {out}/results.jsonl: "
            "the same command resumes it",
            file=sys.stderr,
        )
        return 130
    return 2 if failed else 0
