"""Sweeps: many training runs over seeds and settings, on local worker processes or a Ray
cluster, with a table of mean ± sd per setting.

A spec (:mod:`.spec`, TOML) names the runs; each run is one ``pocketnn train`` command
(:mod:`.execute`), deterministic, so it gives the same bits on any backend; a run's result
is recorded in the sweep folder's ``results.jsonl`` as soon as it ends (:mod:`.results`),
so a killed sweep resumes without rerunning finished runs; :mod:`.local` runs them on
worker processes, :mod:`.ray_tune` on a Ray cluster through Ray Tune (the ``ray`` extra);
:mod:`.table` prints the tables and :mod:`.driver` ties it together.
"""

from .driver import run_sweep
from .spec import Run, Spec, SpecError, load_spec

__all__ = ["Run", "Spec", "SpecError", "load_spec", "run_sweep"]
