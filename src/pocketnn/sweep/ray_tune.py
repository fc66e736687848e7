"""Runs on a Ray cluster, through Ray Tune (the ``ray`` extra: ``pip install 'pocketnn[ray]'``).

Each run is one Tune trial (one CPU) that trains exactly as a local worker would, in a
scratch folder of whichever node Tune places it on, and reports after every epoch: the
integer figures and a checkpoint holding the model file and its log. When a trial ends,
this process (the driver) copies its last checkpoint into the sweep folder and records the
run, so a killed sweep resumes from ``results.jsonl`` as a local one does.

Data files named by ``data`` travel with the trials through Ray's object store, so worker
nodes need no copy of them (a folder of images must exist at the same path on every node);
every node needs pocketnn installed. Tune keeps its own files in ``OUT/ray``; on a cluster
of several machines that folder must be shared storage, as Ray Tune requires.

Early stopping, where the spec asks for it, is Tune's ASHA scheduler deciding on the
validation accuracy (in basis points, an integer), never on the test set. Which runs it
stops depends on the order in which trials report; every epoch a run does complete is
still the same bits as the same epoch run locally.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..cli.runlog import log_path_for
from ..io.atomic import atomic_write_bytes
from ..io.model_file import load_checkpoint
from ..train.trainer import EpochResult
from .execute import train_run
from .spec import Run

BASIS_POINTS = 10_000


def _trial(config: dict[str, Any], blobs: dict[str, tuple[str, bytes]]) -> None:
    """One Tune trial: train the run, reporting each epoch with a checkpoint of its files."""
    from ray import tune

    run = Run(**config["run"])
    scratch = Path(tempfile.mkdtemp(prefix="pocketnn-trial-"))
    try:
        setting = dict(run.setting)
        if setting.get("data") in blobs:  # a data file shipped by the driver
            name, content = blobs[setting["data"]]
            local = scratch / "data" / name
            local.parent.mkdir()
            local.write_bytes(content)
            setting["data"] = str(local)
        model = scratch / "model" / f"{run.name}.npz"
        model.parent.mkdir()

        def report(result: EpochResult) -> None:
            metrics = {k: v for k, v in vars(result).items() if v is not None}
            if result.val_total:
                metrics["val_accuracy_bp"] = result.val_correct * BASIS_POINTS // result.val_total
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(model.parent)))

        train_run(replace(run, setting=setting), model, report)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _ship(runs: Sequence[Run]) -> dict[str, tuple[str, bytes]]:
    """The contents of every data file the runs read, by the path the runs name."""
    blobs = {}
    for run in runs:
        data = run.setting.get("data")
        if data is not None and data not in blobs and Path(data).is_file():
            blobs[data] = (Path(data).name, Path(data).read_bytes())
    return blobs


def run_ray(
    runs: Sequence[Run],
    paths: Sequence[Path],
    out: Path,
    address: str,
    workers: int | None,
    early_stopping: dict[str, int] | None,
    on_done: Callable[[Run, str | None, bool], None],
) -> None:
    """Run every run as a Tune trial on the Ray cluster at ``address``; ``on_done(run,
    error, stopped_early)`` is called in this process as each trial ends."""
    try:
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
    except ImportError:
        raise ImportError("--ray needs Ray: pip install 'pocketnn[ray]'") from None
    by_name = {run.name: (run, path) for run, path in zip(runs, paths)}

    class Collect(tune.Callback):
        """Copies each ended trial's last checkpoint into the sweep and records the run."""

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any):
            run, path = by_name[trial.config["run"]["name"]]
            checkpoint = trial.checkpoint
            if checkpoint is None:
                on_done(run, "the trial ended before its first epoch", False)
                return
            with checkpoint.as_directory() as folder:
                model = Path(folder) / path.name
                for src, dst in ((model, path), (log_path_for(model), log_path_for(path))):
                    atomic_write_bytes(dst, src.read_bytes())
            state = load_checkpoint(path)[1] or {}
            on_done(run, None, state.get("epoch", 0) < state.get("epochs", 0))

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any):
            run, _ = by_name[trial.config["run"]["name"]]
            error = getattr(trial, "error_msg", None) or "the trial failed"
            on_done(run, str(error).strip().splitlines()[-1], False)

    scheduler = None
    if early_stopping is not None:
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            metric="val_accuracy_bp",
            mode="max",
            max_t=1_000_000,  # runs end at their own epoch count
            grace_period=early_stopping["grace"],
            reduction_factor=early_stopping["reduction"],
        )
    ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    try:
        trainable = tune.with_resources(tune.with_parameters(_trial, blobs=_ship(runs)), {"cpu": 1})
        tuner = tune.Tuner(
            trainable,
            param_space={"run": tune.grid_search([asdict(run) for run in runs])},
            tune_config=tune.TuneConfig(
                scheduler=scheduler,
                max_concurrent_trials=workers,
                trial_dirname_creator=lambda trial: trial.trial_id,
            ),
            run_config=tune.RunConfig(
                name=f"sweep-{os.getpid()}",
                storage_path=str((out / "ray").resolve()),
                verbose=0,
                callbacks=[Collect()],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
        tuner.fit()
    finally:
        ray.shutdown()
