"""matplotlib, imported on first use with a file-only backend, and saving a figure."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write_bytes

FORMATS = ("png", "svg", "pdf")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'pocketnn[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike) -> None:
    """Write ``fig`` atomically in the format the suffix names, then free it."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"{path}: unknown picture format; name a .png, .svg or .pdf file")
    if not path.parent.is_dir():
        raise ValueError(f"{path}: folder {path.parent} does not exist")
    buf = io.BytesIO()
    # fixed metadata: the same figures give the same bytes (no date, no version)
    metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
    fig.savefig(buf, format=fmt, dpi=110, bbox_inches="tight", metadata=metadata[fmt])
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
