"""The ``export-c`` command: C99 sources of a saved model, optionally its Cortex-M0 footprint."""

from __future__ import annotations

import argparse


def cmd_export_c(args: argparse.Namespace) -> int:
    """Write NAME.h and NAME.c into ``--out``; with ``--report`` print the footprint."""
    from ..export import export_c, footprint_report

    paths = export_c(args.model, args.out, name=args.name, with_training=args.with_training)
    for p in paths:
        print(f"wrote {p}")
    if args.report:
        print(footprint_report(args.model, name=args.name, with_training=args.with_training))
    return 0
