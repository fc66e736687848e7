"""Integer data augmentation: random shifts (a crop of the zero-padded image) and flips.

Every draw comes from the run's seed, the epoch and the batch's position in the epoch, in
Python, before the step: the same images on every engine, and after ``--resume``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Augment:
    """Each image moves by ``dy, dx`` drawn uniformly in ``[-shift, shift]`` (zeros come in
    at the border: a crop of the image padded by ``shift``), and with ``flip`` is mirrored
    left-right with probability 1/2. ``image_shape`` is ``(C, H, W)``; flat rows of that
    size are augmented as images and returned flat."""

    image_shape: tuple[int, int, int]
    shift: int = 2
    flip: bool = False

    def __post_init__(self) -> None:
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"augmentation needs an image shape (C, H, W), got {self.image_shape}")
        if self.shift < 0 or self.shift >= min(self.image_shape[1:]):
            raise ValueError(f"augmentation shift must lie in [0, {min(self.image_shape[1:]) - 1}]")

    def settings(self) -> dict:
        return {"image_shape": list(self.image_shape), "shift": self.shift, "flip": self.flip}

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        flat = x.ndim == 2
        c, h, w = self.image_shape
        images = x.reshape(x.shape[0], c, h, w)
        n, s = images.shape[0], self.shift
        dy = rng.integers(-s, s + 1, n)
        dx = rng.integers(-s, s + 1, n)
        mirror = rng.integers(0, 2, n).astype(bool) if self.flip else np.zeros(n, dtype=bool)
        padded = np.pad(images, ((0, 0), (0, 0), (s, s), (s, s)))
        rows = np.arange(h)[None, :] + s - dy[:, None]  # (n, h)
        cols = np.arange(w)[None, :] + s - dx[:, None]  # (n, w)
        cols = np.where(mirror[:, None], cols[:, ::-1], cols)
        out = padded[
            np.arange(n)[:, None, None, None],
            np.arange(c)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
        return out.reshape(x.shape) if flat else out
