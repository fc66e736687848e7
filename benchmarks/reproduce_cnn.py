"""Train the integer CNN preset over three seeds per dataset and print the paper-style tables.

Usage::

    python benchmarks/reproduce_cnn.py                      # train (or resume), then tabulate
    python benchmarks/reproduce_cnn.py --table-only         # the tables from the records
    python benchmarks/reproduce_cnn.py --out runs/repro     # in other folders than the specs'

Each dataset's runs are the sweep spec in ``SPECS``: ``pocketnn train --preset cnn`` with the
preset's settings spelled out (``tests/test_reproduce_cnn.py`` checks that they are the
preset's). The tables give, per dataset, the test accuracy after the final epoch and at the
epoch chosen on validation (never on test), the best validation accuracy and the wall time
of every run; NITRO-D's figure is printed beside them as recorded in its paper, not
measured here. A killed run resumes from its last saved epoch when the command is run again.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pocketnn.sweep import load_spec, run_sweep
from pocketnn.sweep.results import read_results
from pocketnn.sweep.table import report

SWEEPS = Path(__file__).resolve().parent / "sweeps"
SPECS = {"mnist": SWEEPS / "cnn-mnist-20.toml", "fashion-mnist": SWEEPS / "cnn-fashion-40.toml"}
"""The runs of ``--preset cnn`` on each dataset, three seeds."""
NITRO_D = {"mnist": "99.45", "fashion-mnist": "93.66"}
"""NITRO-D's accuracy (%), recorded in its paper: VGG8B, best of 150 epochs on the test set."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="parent folder of one sweep folder per dataset")
    parser.add_argument("--datasets", nargs="+", choices=sorted(SPECS), default=list(SPECS))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    failed = 0
    for dataset in args.datasets:
        spec = load_spec(SPECS[dataset])
        out = args.out / dataset if args.out else spec.out
        print(f"\n## {dataset}, --preset cnn ({SPECS[dataset].name}, folder {out})\n", flush=True)
        if args.table_only:
            print(report(spec.runs, read_results(out, spec.runs), spec.report_epochs))
        else:
            failed += run_sweep(spec, out, args.workers)
        print(f"NITRO-D, recorded in its paper (not measured here): {NITRO_D[dataset]} %")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
