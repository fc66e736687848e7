"""Training progress on the terminal: the step bar on stderr and the line printed per epoch."""

from __future__ import annotations

import sys
import time

from ..train.trainer import EpochResult
from .report import percent


class ProgressBar:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label, self.enabled, self.last = label, enabled and sys.stderr.isatty(), -1
        self.start = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        filled = 30 * done // total
        if filled == self.last and done != total:
            return
        self.last = filled
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
            f"{done}/{total} steps {rate:.0f}/s"
        )
        if done == total:
            sys.stderr.write("\r" + " " * 79 + "\r")
        sys.stderr.flush()


def epoch_line(r: EpochResult, epochs: int) -> str:
    """One epoch's figures: learning rate, loss, train and test accuracy, seconds."""
    test = percent(r.test_correct, r.test_total) if r.test_total else "-"
    val = f"  val {percent(r.val_correct, r.val_total)}" if r.val_total else ""
    return (
        f"epoch {r.epoch:3d}/{epochs}  lr_inv {r.lr_inv:6d}  loss {r.loss:10d}  "
        f"train {percent(r.train_correct, r.train_total)}{val}  test {test}  {r.seconds:6.2f} s"
    )
