"""``python -m pocketnn.cli``: the same as the ``pocketnn`` command."""

import sys

from . import main

sys.exit(main())
