"""Export a model to other targets: portable C99 for microcontrollers without an FPU.

``export_c`` writes ``NAME.h`` and ``NAME.c`` (inference, optionally on-device DFA training);
``footprint_report`` cross-compiles them for a Cortex-M0 and measures flash, RAM and stack.
"""

from .c import ExportError, export_c, generate_c
from .footprint import FootprintReport, ToolError, footprint_report

__all__ = [
    "ExportError",
    "FootprintReport",
    "ToolError",
    "export_c",
    "footprint_report",
    "generate_c",
]
