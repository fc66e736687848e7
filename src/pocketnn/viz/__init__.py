"""Pictures of runs, for people: training curves and confusion matrices (matplotlib).

This package is the one place where model figures become floats (percentages, mean losses,
axis positions); nothing here is on the training or inference path, and matplotlib is
imported only when a picture is drawn (``pip install 'pocketnn[plot]'``).
"""

from .confusion import plot_confusion
from .curves import plot_curves

__all__ = ["plot_confusion", "plot_curves"]
