"""Inputs are validated once, where they enter: flags, C names, batch sizes, parameter
values; and a user's files are only ever read (the dataset cache, export-c's folder)."""

from __future__ import annotations

import hashlib
import os
import subprocess

import numpy as np
import pytest

from pocketnn import Trainer, build_mlp, save
from pocketnn.cli import main
from pocketnn.datasets import DatasetError, cache, load_dataset
from pocketnn.datasets.catalog import STEMS
from pocketnn.export import ExportError, export_c, generate_c
from pocketnn.nn.layers import Dense


def cli_line(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("pocketnn: error: "), err
    assert sum(line.startswith("pocketnn: error") for line in lines) == 1, err
    return lines[-1]


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--arch", "٧٨٤-10-10"], "--arch must look like"),  # Arabic-Indic digits
        (["--arch", "784-1_0-10"], "--arch 784-1_0-10: 784: not a layer"),
        (["--epochs", "٣"], "invalid int value: '٣'"),
        (["--seed", "1_000"], "invalid int value"),
        (["--batch-size", " 20"], "invalid int value"),
        (["--lr-inv", "１０００"], "invalid int value"),  # full-width digits
    ],
)
def test_numbers_are_ascii_digits(capsys, tmp_path, flags, fragment):
    line = cli_line(capsys, "train", "--dataset", "mnist", *flags, "--out", tmp_path / "m.npz")
    assert fragment in line
    assert list(tmp_path.iterdir()) == []


def test_a_batch_larger_than_the_data_is_refused(capsys, tmp_path, mnist):
    out = tmp_path / "m.npz"
    line = cli_line(capsys, "train", "--dataset", "mnist", "--batch-size", 60001, "--out", out)
    assert "--batch-size 60001 exceeds the 60000 training samples of mnist" in line
    assert list(tmp_path.iterdir()) == []


def test_parameter_values_must_fit_their_dtype():
    layer = Dense(2, 2)
    for bad in (np.array([[-(2**63), 0], [0, 0]]), np.array([[2**64 - 1, 0], [0, 0]], np.uint64)):
        with pytest.raises(ValueError, match="fc.W: values exceed ±32767"):
            layer.set_params(bad, np.zeros(2, np.int64))
    with pytest.raises(TypeError, match="expected integers"):
        layer.set_params(np.zeros((2, 2), np.int64), np.array([True, False]))
    assert not layer.W.any()


# --------------------------------------------------------------------------- export-c


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("stdint", "shadow the standard <stdint.h>"),
        ("STDINT", "shadow the standard <stdint.h>"),  # case-insensitive file systems
        ("Math", "shadow the standard <math.h>"),
        ("main", "file of the firmware or the build harness"),
        ("runtime", "file of the firmware or the build harness"),
        ("_model", "starts with '_'"),
        ("__x", "starts with '_'"),
        ("int", "C keyword"),
        ("bool", "C keyword"),  # C23
        ("my-model", "not a C identifier"),
    ],
)
def test_c_names_are_valid_and_not_reserved(capsys, tmp_path, name, fragment):
    with pytest.raises(ExportError, match=fragment):
        generate_c(build_mlp([4, 3]), name)
    model = tmp_path / "m.npz"
    save(model, build_mlp([4, 3]))
    line = cli_line(capsys, "export-c", model, "--out", tmp_path / "c", "--name", name)
    assert line.startswith("pocketnn: error: --name: ") and fragment in line
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("max_batch", [0, 32768, 10**9, True, 2.5])
def test_the_on_device_batch_is_bounded(max_batch):
    model = build_mlp([4, 3, 2])
    feedback = [np.ones((2, 3), np.int32)]
    with pytest.raises(ExportError, match=r"max_batch must be an integer in \[1, 32767\]"):
        generate_c(model, "m", with_training=True, feedback=feedback, max_batch=max_batch)


@pytest.mark.gcc
def test_a_model_trained_on_a_huge_batch_exports_only_with_max_batch(capsys, tmp_path, mnist):
    """The batch a model was trained with becomes the C's buffer size: a batch that no C
    int holds is refused with the flag to use, and the C then compiles."""
    model = build_mlp([784, 12, 10])
    trainer = Trainer(model, seed=1, batch_size=60000)
    trainer.fit(mnist.train_images[:60000], mnist.train_labels[:60000], 1)
    path = tmp_path / "m.npz"
    trainer.save(path)
    line = cli_line(capsys, "export-c", path, "--out", tmp_path / "c", "--with-training")
    assert f"{path}: max_batch must be" in line and "--max-batch" in line
    argv = ["export-c", path, "--out", tmp_path / "c", "--with-training", "--max-batch", 64]
    assert main([str(a) for a in argv]) == 0
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c"]
    subprocess.run(["gcc", *flags, tmp_path / "c" / "model.c", "-o", tmp_path / "m.o"], check=True)


def test_export_replaces_its_own_files_never_a_users(tmp_path):
    model = build_mlp([4, 3])
    first = export_c(model, tmp_path, "net")
    assert export_c(model, tmp_path, "net") == first  # its own files: replaced
    mine = tmp_path / "mine.c"
    mine.write_text("int main(void) { return 0; }\n")
    with pytest.raises(ExportError, match="mine.c: exists and was not generated by pocketnn"):
        export_c(model, tmp_path, "mine")
    assert mine.read_text() == "int main(void) { return 0; }\n"
    assert not (tmp_path / "mine.h").exists()


# --------------------------------------------------------------------------- the cache


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """POCKETNN_DATA pointing at a folder of the user's, holding their own MNIST copy, one
    file of which fails verification; the checksums of the synthetic files are patched in."""
    rng = np.random.default_rng(1)
    raw = {}
    for stem in STEMS:
        shape = (4, 28, 28) if "images" in stem else (4,)
        header = bytes([0, 0, 8, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)
        raw[stem] = header + rng.integers(0, 10, shape, dtype=np.uint8).tobytes()
    table = {
        "mnist": {
            s: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for s, b in raw.items()
        }
    }
    monkeypatch.setattr(cache, "checksums", lambda: table)
    folder = tmp_path / "mydata"
    (folder / "mnist").mkdir(parents=True)
    for stem, data in raw.items():
        (folder / "mnist" / stem).write_bytes(data)
    victim = folder / "mnist" / STEMS[3]
    victim.write_bytes(raw[STEMS[3]] + b"my notes")
    monkeypatch.setenv("POCKETNN_DATA", str(folder))
    source = tmp_path / "source"
    source.mkdir()
    for stem, data in raw.items():
        (source / stem).write_bytes(data)
    return folder, victim, source


def test_the_cache_never_deletes_a_users_file(user_folder):
    folder, victim, source = user_folder
    before = victim.read_bytes()
    with pytest.raises(DatasetError, match="not written by pocketnn's cache: left as it is"):
        load_dataset("mnist", sources=("cache",))
    assert victim.read_bytes() == before
    with pytest.warns(UserWarning, match="pocketnn did not write them"):  # nor replaces it
        data = load_dataset("mnist", data_dir=source, sources=("cache", "dir"))
    assert data.test_labels.shape == (4,) and victim.read_bytes() == before
    assert sorted(os.listdir(folder / "mnist")) == sorted(STEMS)  # nothing of its own added


def test_the_cache_replaces_what_it_wrote(user_folder):
    folder, victim, source = user_folder
    victim.unlink()  # now the cache writes this one file, and may replace it later
    with pytest.warns(UserWarning, match="cannot cache train-images"):  # the user's three
        load_dataset("mnist", data_dir=source, sources=("dir",))
    assert cache.written_by_cache(folder / "mnist", victim.name)
    assert not cache.written_by_cache(folder / "mnist", STEMS[0])  # the user's
    victim.write_bytes(b"changed by someone")  # written since: no longer the cache's file
    assert not cache.written_by_cache(folder / "mnist", victim.name)


def test_a_checkpoints_history_must_hold_numbers():
    from pocketnn.train.trainer import EpochResult

    record = dict(epoch=1, lr_inv=1000, loss=5, train_correct=3, train_total=9)
    record.update(test_correct=None, test_total=None, seconds=0.5)
    assert EpochResult.from_record(record).loss == 5
    for key, value in (("test_correct", "Dense"), ("loss", True), ("epoch", None)):
        with pytest.raises(ValueError, match=f"history: {key} must be a number"):
            EpochResult.from_record(dict(record, **{key: value}))
    with pytest.raises(ValueError, match="must hold epoch"):
        EpochResult.from_record(dict(record, extra=1))


def test_trainer_arguments_fit_their_types():
    model = build_mlp([4, 3, 2])
    for value in (2**31, -(2**31), 2**70, True, 1.5):
        with pytest.raises(ValueError, match="target_value"):
            Trainer(model, target_value=value)
    with pytest.raises(ValueError, match="fc1: feedback values exceed the int32 range"):
        Trainer(model, feedback=[np.full((2, 3), 2**40, dtype=np.int64)])
