"""Training curves: accuracy and mean loss per epoch, of several runs on one figure."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from .backend import pyplot, save_figure

# (record prefix, label, line style): the training figures are counted during the epoch,
# each batch before its update; test and validation after the epoch
SPLITS = (("train", "train", "-"), ("val", "validation", ":"), ("test", "test", "--"))


def _series(records: Sequence[Mapping], prefix: str) -> tuple[list, list, list]:
    """Epochs, accuracy % and mean loss per sample of one split (floats: for the picture)."""
    loss_key = "loss" if prefix == "train" else f"{prefix}_loss"
    epochs, accuracy, loss = [], [], []
    for r in records:
        total = r.get(f"{prefix}_total")
        if not total or r.get(f"{prefix}_correct") is None:
            continue
        epochs.append(r["epoch"])
        accuracy.append(100 * r[f"{prefix}_correct"] / total)
        loss.append(r[loss_key] / total if r.get(loss_key) is not None else float("nan"))
    return epochs, accuracy, loss


def plot_curves(
    runs: Mapping[str, Sequence[Mapping]], path: str | os.PathLike, title: str | None = None
) -> None:
    """Draw accuracy (left) and mean L2 loss per sample (right) against the epoch for every
    run in ``runs`` (label -> its log records), one colour per run and one line style per
    split (train solid, validation dotted, test dashed), and save the figure to ``path``."""
    plt = pyplot()
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, records) in enumerate(runs.items()):
        colour = colours[i % len(colours)]
        for prefix, split, style in SPLITS:
            epochs, accuracy, loss = _series(records, prefix)
            if not epochs:
                continue
            name = f"{label}: {split}" if len(runs) > 1 else split
            marker = "o" if len(epochs) < 20 else None
            acc_ax.plot(epochs, accuracy, style, color=colour, marker=marker, ms=3, label=name)
            loss_ax.plot(epochs, loss, style, color=colour, marker=marker, ms=3, label=name)
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    loss_ax.set(xlabel="epoch", ylabel="L2 loss per sample", title="loss", yscale="log")
    for ax in (acc_ax, loss_ax):
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    loss_ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
