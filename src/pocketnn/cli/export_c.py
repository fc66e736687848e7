"""The ``export-c`` command: C99 sources of a saved model, optionally its Cortex-M0 footprint."""

from __future__ import annotations

import argparse

from .errors import about


def cmd_export_c(args: argparse.Namespace) -> int:
    """Write NAME.h and NAME.c into ``--out``; with ``--report`` print the footprint."""
    from ..export import export_c, footprint_report
    from ..export.c.ctext import check_name

    with about("--name"):  # about the flag, before the model file is read
        check_name(args.name)
    with about(args.model):
        paths = export_c(
            args.model,
            args.out,
            name=args.name,
            with_training=args.with_training,
            max_batch=args.max_batch,
        )
    for p in paths:
        print(f"wrote {p}")
    if args.report:
        with about(args.model):
            report = footprint_report(
                args.model,
                name=args.name,
                with_training=args.with_training,
                max_batch=args.max_batch,
            )
        print(report)
    return 0
