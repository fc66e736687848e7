"""A training run owns its output: one run per path, no lost line, no stray file, no surprise.

``pocketnn train`` locks ``--out`` and its log for the whole run, checks that the folder can
take both before training, replaces only regular files, writes the log from the model's own
history (so a kill never loses a line the model has) and cleans up the temporary files a
killed run left. The kill test kills real training processes with SIGKILL at random
moments; ``POCKETNN_KILLS`` sets how many (docs/reliability.md gives a long run's figures).
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pocketnn import build_mlp, load_checkpoint, save
from pocketnn.cli import main, runlog
from pocketnn.cli.runlog import log_path_for
from pocketnn.io.atomic import NotARegularFileError, atomic_write_bytes
from pocketnn.io.locks import lock_path_for, owning, part_name, remove_stale_parts

SRC = str(Path(__file__).resolve().parents[1] / "src")
KILLS = int(os.environ.get("POCKETNN_KILLS", "4"))
SMALL = ["train", "--dataset", "mnist", "--arch", "784-16-10", "--quiet"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str, *fragments: str) -> None:
    """The error is the last line of stderr, and one line (progress lines may precede it)."""
    lines = err.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("pocketnn: error: ")]
    assert errors == [len(lines) - 1] and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


def cli(*argv, cwd, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.Popen(
        [sys.executable, "-m", "pocketnn.cli", *map(str, argv)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def history_records(path: Path) -> list[dict]:
    _, state, _ = load_checkpoint(path)
    return [dict(r, dataset=state["dataset"], seed=state["seed"]) for r in state["history"]]


def log_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in log_path_for(path).read_text().splitlines()]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- ownership


def test_a_second_run_on_the_same_path_is_refused_at_once(capsys, tmp_path):
    out = tmp_path / "m.npz"
    with owning(out):  # as a running `pocketnn train --out m.npz` holds it
        code, _, err = run(capsys, *SMALL, "--out", out)
    assert code == 2
    one_line(err, str(out), "in use by another pocketnn run", f"process {os.getpid()}")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, lock gone
    with owning(log_path_for(out)):  # the log is owned too
        code, _, err = run(capsys, *SMALL, "--out", out)
    one_line(err, "m.log.jsonl", "in use")


@pytest.mark.slow
def test_two_processes_on_one_path_one_runs_one_is_refused(tmp_path, mnist):
    out = tmp_path / "m.npz"
    first = cli(*SMALL, "--epochs", 2, "--out", out, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not lock_path_for(out).exists() and first.poll() is None:
        assert time.monotonic() < deadline, "the first run never took its lock"
        time.sleep(0.01)
    second = cli(*SMALL, "--epochs", 1, "--seed", 5, "--out", out, cwd=tmp_path)
    _, err2 = second.communicate(timeout=120)
    _, err1 = first.communicate(timeout=300)
    assert second.returncode == 2 and first.returncode == 0, (err1, err2)
    one_line(err2, str(out), "in use by another pocketnn run", f"process {first.pid}")
    assert log_records(out) == history_records(out) and len(log_records(out)) == 2
    assert leftovers(tmp_path) == []


def test_the_log_is_never_replaced_without_force(capsys, tmp_path):
    out = tmp_path / "mnist.npz"
    log = log_path_for(out)
    log.write_text('{"epoch": 1, "mine": true}\n')
    code, _, err = run(capsys, *SMALL, "--out", out)
    one_line(err, str(log), "--force")
    assert log.read_text() == '{"epoch": 1, "mine": true}\n'
    # another model file name never shares the log of mnist.npz
    assert log_path_for(tmp_path / "mnist.other") == tmp_path / "mnist.other.log.jsonl"
    assert log_path_for(tmp_path / "mnist") == tmp_path / "mnist.log.jsonl"


def test_resume_refuses_a_log_that_is_not_its_run(capsys, tmp_path, mnist):
    out = tmp_path / "m.npz"
    assert run(capsys, *SMALL, "--epochs", 1, "--out", out)[0] == 0
    log = log_path_for(out)
    other = {"epoch": 2, "loss": 1, "train_correct": 1, "train_total": 1, "other run": True}
    log.write_text(log.read_text() + json.dumps(other) + "\n")
    code, _, err = run(capsys, *SMALL, "--epochs", 2, "--resume", "--out", out)
    one_line(err, str(log), "not the log of the run")
    assert "other run" in log.read_text()


# --------------------------------------------------------------------------- kills


def test_a_kill_between_model_and_log_loses_no_line(capsys, tmp_path, monkeypatch, mnist):
    """The model of epoch 2 is saved, the log line is not: --resume writes it."""
    out = tmp_path / "m.npz"
    write_log = runlog.write_log
    calls = []

    def killed_at_epoch_2(path, records):
        calls.append(len(records))
        if len(records) == 2:
            raise KeyboardInterrupt  # as a kill right after the model was saved
        write_log(path, records)

    monkeypatch.setattr("pocketnn.cli.train.write_log", killed_at_epoch_2)
    assert run(capsys, *SMALL, "--epochs", 3, "--out", out)[0] == 130
    assert len(history_records(out)) == 2 and len(log_records(out)) == 1
    monkeypatch.setattr("pocketnn.cli.train.write_log", write_log)
    assert run(capsys, *SMALL, "--epochs", 3, "--resume", "--out", out)[0] == 0
    assert log_records(out) == history_records(out) and len(log_records(out)) == 3
    assert leftovers(tmp_path) == []


def _params(path: Path) -> list[np.ndarray]:
    model, _, _ = load_checkpoint(path)
    return [p for layer in model.layers for p in layer.parameters().values()]


@pytest.mark.slow
def test_runs_killed_at_random_moments_resume_to_the_same_bits(tmp_path, mnist):
    """SIGKILL at random moments, then --resume until done: the bits of one uninterrupted
    run, a log equal to the model's history, and no temporary or lock file left."""
    args = [*SMALL, "--epochs", 3, "--seed", 3, "--rounding", "stochastic"]
    whole = tmp_path / "whole"
    whole.mkdir()
    done = cli(*args, "--out", whole / "m.npz", cwd=whole)
    assert done.wait(timeout=600) == 0, done.stderr.read()
    rng = random.Random(KILLS)
    out_dir = tmp_path / "killed"
    out_dir.mkdir()
    out, kills, stray = out_dir / "m.npz", 0, 0
    while kills < KILLS:
        resume = ["--resume"] if out.exists() else []
        proc = cli(*args, *resume, "--out", out, cwd=out_dir)
        try:
            proc.wait(timeout=rng.uniform(0.3, 5.0))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            stray += bool(leftovers(out_dir))  # a lock or temporary file the kill left
            continue
        finally:
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == 0
        out.unlink()  # finished before the kill: start over, so every kill interrupts
        log_path_for(out).unlink()
    while True:
        proc = cli(*args, *(["--resume"] if out.exists() else []), "--out", out, cwd=out_dir)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        if len(history_records(out)) == 3:
            break
    assert all(np.array_equal(a, b) for a, b in zip(_params(out), _params(whole / "m.npz")))
    assert log_records(out) == history_records(out)
    assert leftovers(out_dir) == []
    print(f"{kills} kills ({stray} left a lock or temporary file behind), nothing lost")


# --------------------------------------------------------------------------- stray files


def _writer_holding(part: Path) -> subprocess.Popen:
    """Another process that has created ``part`` and holds its lock, as a live writer does."""
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(part)], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    return proc


def test_temporary_files_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    path = tmp_path / "m.npz"
    stale = part_name(path, "0123456789abcdef")
    stale.write_bytes(b"half a model")  # what a kill during a save leaves: nobody holds it
    live = part_name(path, "fedcba9876543210")
    writer = _writer_holding(live)
    mine = tmp_path / ".m.npz.notes.part"  # not a name pocketnn gives its files
    mine.write_text("a user's file")
    try:
        save(path, build_mlp([4, 3]))
        assert not stale.exists() and live.exists() and mine.exists()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert remove_stale_parts(path) == [live]  # its writer is dead now
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name, "m.npz"]


# --------------------------------------------------------------------------- writability


def test_an_unwritable_folder_is_refused_before_anything_is_loaded(capsys):
    code, _, err = run(capsys, *SMALL, "--out", "/proc/m.npz")  # read-only for root too
    one_line(err, "--out: cannot write in /proc")


@pytest.mark.slow
def test_a_full_disk_is_found_before_the_first_epoch(tmp_path, mnist):
    """A file-size limit (as a full disk) lets the lock be made but not the model."""

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = cli(*SMALL, "--epochs", 1, "--out", tmp_path / "m.npz", cwd=tmp_path,
               preexec_fn=small_files)  # fmt: skip
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "epoch" not in out
    one_line(err, "--out: cannot write", f"in {tmp_path}", "File too large")
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- regular files


def test_only_regular_files_are_replaced(capsys, tmp_path):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    code, _, err = run(capsys, *SMALL, "--force", "--out", fifo)
    one_line(err, str(fifo), "is a FIFO", "only regular files")
    assert fifo.is_fifo()
    with pytest.raises(NotARegularFileError, match="FIFO"):
        save(fifo, build_mlp([4, 3]))
    with pytest.raises(NotARegularFileError, match="folder"):
        atomic_write_bytes(tmp_path, b"x")
    if os.geteuid() == 0:  # a device node (only root can make one)
        node = tmp_path / "null.npz"
        os.mknod(node, 0o600 | 0o020000, os.makedev(1, 3))
        code, _, err = run(capsys, *SMALL, "--force", "--out", node)
        one_line(err, "is a character device")
        assert node.is_char_device()
    # a symbolic link is followed: its target is replaced, the link stays a link
    target = tmp_path / "real.npz"
    target.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    save(link, build_mlp([4, 3]))
    assert link.is_symlink() and load_checkpoint(target)[0].dims == [4, 3]
