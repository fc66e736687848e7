"""Running a sweep: skip what is recorded, run the rest on a backend, record each run as it
ends, print the tables."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from ..io.atomic import atomic_write_bytes
from .results import append_result, model_path, read_results, run_record
from .spec import Run, Spec, SpecError
from .table import percent, report

TABLE = "table.md"


def run_sweep(
    spec: Spec,
    out: Path,
    workers: int | None = 1,
    ray_address: str | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """Run every run of ``spec`` not yet recorded in ``out``; print and save the tables.
    Returns the number of runs that failed (each reported on its own line)."""
    if spec.early_stopping is not None and ray_address is None:
        raise SpecError(
            f"{spec.path}: [early_stopping] uses Ray Tune's scheduler: run with --ray ADDRESS, "
            "or remove the section to run every epoch locally"
        )
    (out / "runs").mkdir(parents=True, exist_ok=True)
    records = read_results(out, spec.runs)
    todo = [run for run in spec.runs if run.name not in records]
    finished = len(spec.runs) - len(todo)
    where = f"Ray cluster {ray_address}" if ray_address else f"{workers} local worker(s)"
    if ray_address is None and workers is None:
        raise ValueError("a local sweep needs a number of workers")
    echo(
        f"sweep {spec.path}: {len(spec.runs)} runs, {finished} already recorded in "
        f"{out / 'results.jsonl'}, {len(todo)} to run on {where}"
    )
    failures = []

    def on_done(run: Run, error: str | None, stopped_early: bool) -> None:
        if error is not None:
            failures.append(run.name)
            echo(f"failed {run.name}: {error}")
            return
        backend = "ray" if ray_address else "local"
        record = run_record(run, model_path(out, run), backend, stopped_early)
        append_result(out, record)
        records[run.name] = record
        last = record["epochs"][-1]
        note = " (stopped early)" if stopped_early else ""
        echo(
            f"[{len(records)}/{len(spec.runs)}] {run.name}: test {percent(last, 'test'):.2f} % "
            f"after {last['epoch']} epochs{note}"
        )

    paths = [model_path(out, run) for run in todo]
    if todo and ray_address is None:
        from .local import run_local

        run_local(todo, paths, workers or 1, on_done)
    elif todo:
        from .ray_tune import run_ray

        run_ray(todo, paths, out, ray_address, workers, spec.early_stopping, on_done)
    table = report(spec.runs, records, spec.report_epochs)
    atomic_write_bytes(out / TABLE, table.encode())
    echo("")
    echo(table)
    if failures:
        print(f"{len(failures)} run(s) failed: {', '.join(failures)}", file=sys.stderr)
    return len(failures)
