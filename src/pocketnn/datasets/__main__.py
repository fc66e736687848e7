"""``python -m pocketnn.datasets``: runs :func:`pocketnn.datasets.cli.main`.

The command lives in :mod:`.cli` rather than here so that the package can re-export ``main``
without importing this module (runpy warns when ``__main__`` is imported before it runs).
"""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
