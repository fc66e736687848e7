"""Sweeps: the spec, local workers, resuming a killed sweep, and the same bits on Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pocketnn.cli import main
from pocketnn.cli.presets import PRESETS
from pocketnn.sweep import SpecError, load_spec, run_sweep
from pocketnn.sweep.results import RESULTS, read_results

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks" / "sweeps"


def write_data(folder: Path) -> Path:
    """A small learnable integer dataset: the class is the sign pattern of two features."""
    rng = np.random.default_rng(0)
    x = rng.integers(-100, 101, (600, 6)).astype(np.int16)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    np.savez(folder / "quad.npz", x_train=x[:500], y_train=y[:500], x_test=x[500:], y_test=y[500:])
    return folder / "quad.npz"


def write_spec(folder: Path, text: str) -> Path:
    write_data(folder)
    path = folder / "spec.toml"
    path.write_text(text)
    return path


GRID = "lr_inv = [500, 2000]"
SPEC = """
[sweep]
seeds = [1, 2]

[train]
data = "quad.npz"
epochs = {epochs}
val = 100
batch-size = 10

[grid]
lr_inv = [500, 2000]
{extra}
"""


def records(out: Path) -> dict[str, dict]:
    lines = (out / RESULTS).read_text().splitlines()
    return {r["name"]: r for r in map(json.loads, lines)}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[sweeps]\nseeds = [1]", "unknown section(s) ['sweeps']"),
        ("[train]\ndataset = 'mnist'\nlr_inv = 1.5", "[train] lr_inv: an integer or a string"),
        ("[train]\ndataset = 'mnist'\nout = 'x.npz'", "[train] out: the sweep sets this flag"),
        ("[train]\ndataset = 'mnist'\nlr-nope = 3", "unrecognized arguments: --lr-nope 3"),
        ("[train]\ndataset = 'mnist'\n[grid]\nrounding = ['up']", "invalid choice: 'up'"),
        ("[train]\ndataset = 'mnist'\n[grid]\nlr_inv = 5", "a non-empty list of values"),
        ("[sweep]\nseeds = [1, 1]\n[train]\ndataset = 'mnist'", "repeated seed"),
        ("[train]\nepochs = 3", "no data: set dataset or data"),
        ("[train]\ndataset = 'mnist'\n[early_stopping]\ngrace = 2", "never on the test set"),
        ("[train]\ndataset = 'mnist'\n[random]\nlr_inv = [1, 2]", 'needs search = "random"'),
        ("[train\n", "not valid TOML"),
    ],
)
def test_bad_specs_are_one_line_errors(capsys, tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code = main(["sweep", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and fragment in err and str(path) in err, err
    assert not (tmp_path / "out").exists()


def test_grid_and_random_search_name_their_runs(tmp_path):
    spec = load_spec(write_spec(tmp_path, SPEC.format(epochs=1, extra="")))
    assert [r.name for r in spec.runs] == [
        "lr_inv=500+seed=1",
        "lr_inv=500+seed=2",
        "lr_inv=2000+seed=1",
        "lr_inv=2000+seed=2",
    ]
    assert spec.runs[0].argv(Path("m.npz"))[:1] == ["train"]
    assert spec.runs[0].setting["data"] == str(tmp_path / "quad.npz")
    text = """
[sweep]
search = "random"
samples = 5
seed = 3
[train]
dataset = "mnist"
[random]
lr_inv = {low = 100, high = 5000}
batch_size = [10, 20]
"""
    (tmp_path / "r.toml").write_text(text)
    first, again = load_spec(tmp_path / "r.toml"), load_spec(tmp_path / "r.toml")
    assert [r.setting for r in first.runs] == [r.setting for r in again.runs]
    assert all(100 <= r.setting["lr_inv"] <= 5000 for r in first.runs)
    assert len({r.setting["lr_inv"] for r in first.runs}) > 1


def test_paper_specs_are_valid():
    for name in ("paper.toml", "best.toml"):
        spec = load_spec(BENCHMARKS / name)
        assert [r.setting["dataset"] for r in spec.runs[::3]] == ["mnist", "fashion-mnist"]
        assert spec.seeds == [1, 2, 3] and spec.report_epochs


def test_local_sweep_table_and_resume_after_kill(tmp_path):
    spec_path = write_spec(tmp_path, SPEC.format(epochs=40, extra=""))
    out = tmp_path / "sweep"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    command = [sys.executable, "-m", "pocketnn.cli", "sweep", str(spec_path), "--out", str(out)]
    sweep = subprocess.Popen(
        [*command, "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes its worker too
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sweep.poll() is None:
        if (out / RESULTS).exists() and (out / RESULTS).read_text().strip():
            break
        time.sleep(0.02)
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait()
    before = records(out)
    assert 1 <= len(before) < 4, "the kill came after the whole sweep: make the runs longer"
    kept = {name: (out / "runs" / f"{name}.npz").stat() for name in before}
    done = subprocess.run([*command, "--workers", "2"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"{len(before)} already recorded" in done.stdout
    assert f"{4 - len(before)} to run" in done.stdout
    after = records(out)
    assert len(after) == 4 and all(after[name] == before[name] for name in before)
    for name, stat in kept.items():  # finished runs were not run again
        now = (out / "runs" / f"{name}.npz").stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    # the table: mean ± sd over the two seeds of each setting, from the integer counts
    table = (out / "table.md").read_text()
    accuracy = [
        100 * after[f"lr_inv=500+seed={s}"]["epochs"][-1]["test_correct"] / 100 for s in (1, 2)
    ]
    assert f"| lr_inv=500 | 2 | 40 | {np.mean(accuracy):.2f} ± " in table
    # and the wall time per run, from the seconds the logs recorded for each epoch
    seconds = sorted(round(after[f"lr_inv=500+seed={s}"]["seconds"]) for s in (1, 2))
    span = f"{seconds[0]:,}" if seconds[0] == seconds[1] else f"{seconds[0]:,}–{seconds[1]:,}"
    row = next(line for line in table.splitlines() if line.startswith("| lr_inv=500 |"))
    assert row.endswith(f" {span} |"), row
    # a fresh, uninterrupted sweep gives the very same results
    fresh = tmp_path / "fresh"
    assert run_sweep(load_spec(spec_path), fresh, workers=2, echo=lambda line: None) == 0
    for name, record in records(fresh).items():
        assert record["epochs"] == after[name]["epochs"]
        assert record["parameters_sha256"] == after[name]["parameters_sha256"]


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    """A run a kill left half done continues from its saved epoch, to the same bits as a run
    never interrupted; a spec changed since is refused, and the checkpoint is kept."""
    spec_path = write_spec(tmp_path, SPEC.format(epochs=4, extra=""))
    spec = load_spec(spec_path)
    fresh = tmp_path / "fresh"
    assert run_sweep(spec, fresh, workers=1, echo=lambda line: None) == 0
    out = tmp_path / "interrupted"
    (out / "runs").mkdir(parents=True)
    half = spec.runs[0]
    model = out / "runs" / f"{half.name}.npz"
    main([*half.argv(model), "--epochs", "2", "--quiet"])  # as a kill after epoch 2 leaves it
    assert run_sweep(spec, out, workers=1, echo=lambda line: None) == 0
    for name, record in records(fresh).items():
        assert records(out)[name]["epochs"] == record["epochs"]
        assert records(out)[name]["parameters_sha256"] == record["parameters_sha256"]
    log = (out / "runs" / f"{half.name}.log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3, 4]

    changed = tmp_path / "changed"
    (changed / "runs").mkdir(parents=True)
    model = changed / "runs" / f"{half.name}.npz"
    main([*half.argv(model), "--epochs", "2", "--quiet"])
    saved = model.read_bytes()
    lines = []
    edited = write_spec(
        tmp_path, SPEC.format(epochs=4, extra="").replace("batch-size = 10", "batch-size = 20")
    )
    assert run_sweep(load_spec(edited), changed, workers=1, echo=lines.append) == 1
    assert any(
        f"failed {half.name}: CLIError: --resume" in line
        and "--batch-size 20" in line
        and line.endswith("delete it to run it again from epoch 1")
        for line in lines
    )
    assert model.read_bytes() == saved


def test_a_preset_changed_since_a_run_was_recorded_is_refused(tmp_path, monkeypatch):
    """A record keeps every setting the run trained with, its preset's included: after the
    preset changes, the old results no longer pass for what the spec now runs."""
    spec = load_spec(write_spec(tmp_path, SPEC.format(epochs=1, extra="")))
    out = tmp_path / "out"
    assert run_sweep(spec, out, workers=1, echo=lambda line: None) == 0
    record = next(iter(records(out).values()))
    assert record["resolved"]["target_value"] == 15 and record["resolved"]["epochs"] == 1
    assert len(read_results(out, spec.runs)) == 4
    monkeypatch.setitem(PRESETS["paper"]["mnist"], "target_value", 31)
    with pytest.raises(
        SpecError, match=r"other settings than its preset gives now \(target_value 15 -> 31\)"
    ):
        read_results(out, spec.runs)


def test_early_stopping_needs_ray(tmp_path):
    spec = load_spec(write_spec(tmp_path, SPEC.format(epochs=2, extra="[early_stopping]")))
    with pytest.raises(SpecError, match="--ray ADDRESS"):
        run_sweep(spec, tmp_path / "out", workers=1)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_cluster_gives_the_same_bits_as_local_workers(tmp_path, monkeypatch):
    """A real local Ray head on loopback; Ray Tune runs the sweep with ASHA early stopping
    on the validation accuracy; every epoch it ran equals the local run's, bit for bit."""
    # Ray's switch for a single-machine cluster: every address on loopback, read at import
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    # lr_inv 100000 truncates every update to zero: 22 of 100 validation samples right at
    # each epoch, against over 90 for lr_inv 500, so ASHA stops those runs at epoch 2
    grid = "lr_inv = [500, 100000]"
    early = "[early_stopping]\ngrace = 2\nreduction = 2"
    spec_path = write_spec(tmp_path, SPEC.format(epochs=6, extra=early).replace(GRID, grid))
    local_spec = tmp_path / "local.toml"
    local_spec.write_text(SPEC.format(epochs=6, extra="").replace(GRID, grid))
    assert run_sweep(load_spec(local_spec), tmp_path / "local", 2, echo=lambda line: None) == 0
    context = ray.init(
        num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False
    )
    try:
        address = context.address_info["gcs_address"]
        assert address.startswith("127.0.0.1:")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pocketnn.cli",
                "sweep",
                str(spec_path),
                "--out",
                str(tmp_path / "ray"),
                "--ray",
                address,
                "--workers",
                "1",
            ],  # fmt: skip
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        ray.shutdown()
    assert done.returncode == 0, done.stderr[-3000:]
    local, remote = records(tmp_path / "local"), records(tmp_path / "ray")
    assert set(local) == set(remote) and all(r["backend"] == "ray" for r in remote.values())
    for name, record in remote.items():
        epochs = record["epochs"]
        assert epochs == local[name]["epochs"][: len(epochs)]
        assert record["stopped_early"] == (len(epochs) < 6)
        if not record["stopped_early"]:
            assert record["parameters_sha256"] == local[name]["parameters_sha256"]
    # one run at a time, in grid order: the good runs set the bar at epoch 2
    stopped = {name: len(r["epochs"]) for name, r in remote.items() if r["stopped_early"]}
    assert stopped == {"lr_inv=100000+seed=1": 2, "lr_inv=100000+seed=2": 2}
