"""Reading the JSON-lines training logs (``model.log.jsonl``) back, for plots and sweeps."""

from __future__ import annotations

import json
from pathlib import Path

from ..io.files import read_regular
from .errors import CLIError

REQUIRED = ("epoch", "loss", "train_correct", "train_total")


def read_log(path: str | Path) -> list[dict]:
    """Every epoch record of a training log, in order; a one-line CLIError naming the file
    and line for anything that is not such a log."""
    path = Path(path)
    try:  # a regular file within the input limit: a FIFO or a device would never end
        lines = read_regular(path, CLIError, "log file").decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path}: cannot read the log ({exc})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise CLIError(f"{path}: line {number} is not JSON; expected a training log") from None
        if not isinstance(record, dict) or any(k not in record for k in REQUIRED):
            raise CLIError(
                f"{path}: line {number} is not an epoch record ({', '.join(REQUIRED)} expected)"
            )
        records.append(record)
    if not records:
        raise CLIError(f"{path}: the log has no epoch yet")
    return records
