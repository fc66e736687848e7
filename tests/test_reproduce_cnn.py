"""The CNN reproduction script runs what ``--preset cnn`` trains, and prints its tables."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from pocketnn.cli.parser import build_parser
from pocketnn.cli.presets import settings
from pocketnn.sweep import load_spec
from pocketnn.sweep.results import resolved_settings

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_cnn.py"


def load_script():
    spec = importlib.util.spec_from_file_location("reproduce_cnn", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_the_reproduction_specs_are_the_preset(dataset):
    sweep = load_spec(load_script().SPECS[dataset])
    assert sorted(run.seed for run in sweep.runs) == [1, 2, 3]
    for run in sweep.runs:
        args = build_parser().parse_args(
            [
                "train",
                "--dataset",
                dataset,
                "--preset",
                "cnn",
                "--seed",
                str(run.seed),
                "--out",
                "m",
            ]
        )
        assert resolved_settings(run) == settings(args)


def test_the_tables_come_from_the_records(tmp_path):
    """``--table-only`` on a folder with no record yet says so for each dataset, with the
    recorded NITRO-D figure labelled as such; a bad dataset name is refused."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--table-only"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("no finished run yet") == 2
    assert "recorded in its paper (not measured here): 93.66 %" in done.stdout
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--datasets", "cifar"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid choice: 'cifar'" in bad.stderr
