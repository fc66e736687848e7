"""The JSON-lines training log kept next to a model file, one record per epoch."""

from __future__ import annotations

import json
from pathlib import Path

from ..io.atomic import atomic_write_bytes


def append_log(path: Path, record: dict, fresh: bool = False) -> None:
    """Append one JSON line (or start the log over when ``fresh``), rewriting atomically so
    a crash never leaves half a line."""
    old = path.read_bytes() if path.exists() and not fresh else b""
    atomic_write_bytes(path, old + (json.dumps(record) + "\n").encode())


def log_path_for(model_path: Path) -> Path:
    """The JSON-lines training log kept next to a model file."""
    return model_path.with_name(model_path.stem + ".log.jsonl")
