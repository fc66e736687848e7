"""Pictures of runs: pocketnn plot and evaluate --plot write real images with matplotlib."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pocketnn.cli import main
from pocketnn.cli.report import confusion_matrix


def test_plot_draws_several_runs_and_refuses_a_bad_log(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    logs = []
    for run in ("a", "b"):
        records = [
            {"epoch": e, "lr_inv": 1000, "loss": 900 - 100 * e, "train_correct": 50 + e,
             "train_total": 100, "test_correct": 40 + e, "test_total": 80, "seconds": 0.1,
             "test_loss": 700 - 90 * e, "val_correct": 10 + e, "val_total": 20, "val_loss": 99}
            for e in range(1, 6)
        ]  # fmt: skip
        logs.append(tmp_path / f"{run}.log.jsonl")
        logs[-1].write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "curves.png"
    assert main(["plot", *map(str, logs), "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 600
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # lines, not a blank page
    assert "curves of 2 run(s)" in capsys.readouterr().out
    bad = tmp_path / "bad.log.jsonl"
    bad.write_text('{"epoch": 1}\n')
    assert main(["plot", str(bad), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.log.jsonl: line 1 is not an epoch record" in err
    assert main(["plot", str(logs[0]), "--out", str(tmp_path / "x.gif")]) == 2
    assert "x.gif: unknown picture format" in capsys.readouterr().err


def test_confusion_picture_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    from pocketnn.viz import plot_confusion

    cm = confusion_matrix(np.array([0, 1, 1, 2, 2, 2]), np.array([0, 1, 2, 2, 2, 0]), 3)
    plot_confusion(cm, ["walk", "run", "sit"], tmp_path / "cm.svg", title="motion")
    text = (tmp_path / "cm.svg").read_text()
    assert text.startswith("<?xml") and "walk" in text and "accuracy 66.67 % (4/6)" in text
