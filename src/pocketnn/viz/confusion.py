"""The confusion matrix as a picture: counts in each cell, shaded by the share of its row."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .backend import pyplot, save_figure


def plot_confusion(
    cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike, title: str | None = None
) -> None:
    """Save the integer matrix ``cm[true, predicted]`` as an image with every count written
    in its cell; the shade is the cell's share of its row (the class's recall, off the
    diagonal its confusions)."""
    plt = pyplot()
    cm = np.asarray(cm)
    n = len(cm)
    rows = cm.sum(axis=1, keepdims=True)
    share = cm / np.maximum(rows, 1)  # floats from here on: this is a picture
    size = 2.5 + 0.45 * n
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = np.arange(n)
    names = [str(c)[:12] for c in classes]
    slanted = n > 10 or max(map(len, names), default=0) > 3
    ax.set_xticks(ticks, names, rotation=45 if slanted else 0, ha="right" if slanted else "center")
    ax.set_yticks(ticks, names)
    ax.set(xlabel="predicted class", ylabel="true class")
    correct, total = int(np.trace(cm)), int(cm.sum())
    accuracy = f"{100 * correct / total:.2f} % ({correct}/{total})" if total else "no samples"
    ax.set_title(f"{title + chr(10) if title else ''}accuracy {accuracy}", fontsize=10)
    small = 7 if n > 12 else 9
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                colour = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=colour, fontsize=small)
    fig.tight_layout()
    save_figure(fig, path)
