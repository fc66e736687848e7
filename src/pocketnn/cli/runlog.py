"""The JSON-lines training log kept next to a model file, one record per epoch.

The log is written from the model's own history (:meth:`pocketnn.Trainer.state`), whole
and atomically, after the model: a kill between the two leaves a log one line short,
and the next ``--resume`` writes that line from the saved history. No line the model's
history has is ever lost, and a resumed run never drops a line the log has.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..io.atomic import atomic_write_bytes
from ..io.files import read_regular
from .errors import CLIError


def log_path_for(model_path: Path) -> Path:
    """The JSON-lines training log kept next to a model file.

    ``mnist.npz`` logs to ``mnist.log.jsonl``; a model file with another suffix keeps its
    whole name (``mnist.other`` -> ``mnist.other.log.jsonl``), so two models never share
    a log.
    """
    if model_path.suffix == ".npz":
        return model_path.with_name(model_path.stem + ".log.jsonl")
    return model_path.with_name(model_path.name + ".log.jsonl")


def append_log(path: Path, record: dict) -> None:
    """Append one JSON line, rewriting atomically so a crash never leaves half a line
    (a sweep's ``results.jsonl``)."""
    old = read_regular(path, CLIError, "log") if path.exists() else b""
    atomic_write_bytes(path, bytes(old) + (json.dumps(record) + "\n").encode())


def write_log(path: Path, records: Sequence[dict]) -> None:
    """Write the whole log, one JSON line per record, atomically."""
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())


def is_prefix(log: Sequence[dict], records: Sequence[dict]) -> bool:
    """Whether the log's records are the first records of ``records`` (the same run's)."""
    return len(log) <= len(records) and all(a == b for a, b in zip(log, records))
