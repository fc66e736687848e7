"""Command line: ``python -m pocketnn.datasets fetch mnist fashion-mnist`` (see ``__main__``)."""

from __future__ import annotations

import argparse
import sys

from .catalog import CLASSES, normalise
from .errors import DatasetError
from .load import fetch


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m pocketnn.datasets fetch NAME... [--data-dir D]``."""
    parser = argparse.ArgumentParser(prog="python -m pocketnn.datasets")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fetch", help="download, verify and cache datasets")
    p.add_argument("names", nargs="+", metavar="NAME", help=", ".join(CLASSES))
    p.add_argument("--data-dir", help="folder holding the idx files (raw or .gz)")
    p.add_argument("--cache-dir", help="cache root (default: $POCKETNN_DATA or ~/.cache/pocketnn)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    try:
        for name in args.names:
            folder = fetch(name, args.data_dir, args.cache_dir, verbose=not args.quiet)
            print(f"{normalise(name)}: {folder}")
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
