"""What a finished run leaves: its record in the sweep's ``results.jsonl``, one JSON line
per run, appended atomically when the run's files are in place. A sweep that starts again
skips every run recorded there."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..cli.logs import read_log
from ..cli.parser import build_parser
from ..cli.presets import settings
from ..cli.runlog import append_log, log_path_for
from ..io.model_file import load_model_file
from .spec import Run, SpecError

RESULTS = "results.jsonl"
TIMING = ("seconds", "dataset")
"""Log fields that are not the run's result: wall time, and the data's path on that node."""


def model_path(out: Path, run: Run) -> Path:
    return out / "runs" / f"{run.name}.npz"


def parameters_sha256(path: Path) -> str:
    """sha256 over every parameter array of a model file, names and dtypes included: two
    runs with the same result have the same digest."""
    h = hashlib.sha256()
    for i, layer in enumerate(load_model_file(path).model.layers):
        for name, value in layer.parameters().items():
            a = np.ascontiguousarray(value)
            h.update(f"{i}.{name}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def resolved_settings(run: Run) -> dict:
    """Every hyperparameter the run trains with: its preset's, then the spec's flags. A
    record keeps them, so that a preset changed since cannot pass for the recorded run."""
    args = build_parser().parse_args(run.argv(Path("model.npz")))
    return json.loads(json.dumps(settings(args)))  # the form a record reads back


def run_record(run: Run, model: Path, backend: str, stopped_early: bool = False) -> dict:
    """The result of a finished run from its model file and log."""
    log = read_log(log_path_for(model))
    return {
        "name": run.name,
        "label": run.label,
        "setting": run.setting,
        "resolved": resolved_settings(run),
        "seed": run.seed,
        "epochs": [{k: v for k, v in r.items() if k not in TIMING} for r in log],
        "seconds": sum(r.get("seconds", 0) for r in log),
        "parameters_sha256": parameters_sha256(model),
        "stopped_early": stopped_early,
        "backend": backend,
    }


def read_results(out: Path, runs: list[Run]) -> dict[str, dict]:
    """The records already in ``out``, by run name; refuses a folder of another sweep."""
    path = out / RESULTS
    if not path.exists():
        return {}
    by_name = {run.name: run for run in runs}
    records = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            record = json.loads(line)
            name = record["name"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise SpecError(f"{path}: line {number} is not a run record") from None
        run = by_name.get(name)
        if run is not None and (record.get("setting"), record.get("seed")) != (
            run.setting,
            run.seed,
        ):
            raise SpecError(
                f"{path}: run {name} was recorded with other settings; the spec changed "
                "since, so give the sweep another --out folder"
            )
        if run is not None and "resolved" in record:  # older records hold the flags only
            now = resolved_settings(run)
            changed = [
                f"{key} {record['resolved'].get(key)!r} -> {now.get(key)!r}"
                for key in sorted(set(now) | set(record["resolved"]))
                if now.get(key) != record["resolved"].get(key)
            ]
            if changed:
                raise SpecError(
                    f"{path}: run {name} was recorded with other settings than its preset "
                    f"gives now ({', '.join(changed)}); give the sweep another --out folder"
                )
        records[name] = record
    return records


def append_result(out: Path, record: dict) -> None:
    append_log(out / RESULTS, record)
