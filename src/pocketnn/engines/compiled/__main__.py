"""Build the compiled engine's kernels into the cache (``scripts/setup.sh`` runs this).

python -m pocketnn.engines.compiled [--force]
"""

from __future__ import annotations

import argparse
import sys
import time

from .build import BuildError, build, cached_library


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pocketnn.engines.compiled", description=__doc__)
    p.add_argument("--force", action="store_true", help="rebuild even if already cached")
    args = p.parse_args(argv)
    cached = cached_library() is not None and not args.force
    start = time.perf_counter()
    try:
        path = build(force=args.force)
    except BuildError as exc:
        print(f"pocketnn: {exc}", file=sys.stderr)
        return 1
    how = "already built" if cached else f"built in {time.perf_counter() - start:.1f} s"
    print(f"compiled engine kernels: {path} ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
