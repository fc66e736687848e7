"""Training progress on the terminal: tqdm's step bar on stderr, one line printed per epoch."""

from __future__ import annotations

import sys

from tqdm import tqdm

from ..train.trainer import EpochResult
from .report import percent


class ProgressBar:
    """A ``progress(done, total)`` callback drawing one tqdm bar per epoch on stderr, only
    when stderr is a terminal; the bar is cleared when the epoch ends, leaving its line."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label, self.enabled = label, enabled and sys.stderr.isatty()
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.label, unit="step", leave=False, file=sys.stderr)
        self.bar.update(done - self.bar.n)
        if done == total:
            self.bar.close()
            self.bar = None


def epoch_line(r: EpochResult, epochs: int) -> str:
    """One epoch's figures: learning rate, loss, train and test accuracy, seconds."""
    test = percent(r.test_correct, r.test_total) if r.test_total else "-"
    val = f"  val {percent(r.val_correct, r.val_total)}" if r.val_total else ""
    return (
        f"epoch {r.epoch:3d}/{epochs}  lr_inv {r.lr_inv:6d}  loss {r.loss:10d}  "
        f"train {percent(r.train_correct, r.train_total)}{val}  test {test}  {r.seconds:6.2f} s"
    )
