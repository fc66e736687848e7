"""Layers without parameters that move values around: pooling and flattening.

They share the protocol of every layer; their ``delta`` is the error itself (no
activation), their ``gradient`` is empty, and ``backward`` routes the error back to where
each output came from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from ...core.arith import trunc_div
from ...engines import accelerated_ops
from .base import Gradient, LayerConfig
from .layout import empty_in_layout


class Parameterless:
    """What every layer without parameters shares (its typed config lives in ``_cfg``)."""

    name: str
    _cfg: LayerConfig

    @property
    def config(self) -> LayerConfig:
        return self._cfg

    @property
    def weight_clamp(self) -> int:
        return 0

    def infer(self, a: np.ndarray) -> np.ndarray:
        return self.forward(a)[0]

    def delta(self, error: np.ndarray, cache: object) -> np.ndarray:
        return error

    def gradient(self, delta: np.ndarray, cache: object) -> list[Gradient]:
        return []

    def parameters(self) -> dict[str, np.ndarray]:
        return {}

    def set_parameters(self, params: Mapping[str, np.ndarray]) -> None:
        if params:
            raise ValueError(f"{self.name}: a {type(self).__name__} layer has no parameters")


def _check_positive(name: str, **values: int) -> None:
    for label, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: {label} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class PoolConfig(LayerConfig):
    channels: int
    height: int
    width: int
    size: int = 2


class PoolCache(NamedTuple):
    where: np.ndarray | None  # max pooling: the index of each maximum in its window
    batch: int


class ImageInput(Parameterless):
    """A parameter-free layer whose input is an image ``(channels, height, width)``."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self._cfg.channels, self._cfg.height, self._cfg.width)


class _Pool(ImageInput):
    """Non-overlapping ``size x size`` windows; a border that does not fill a window is
    dropped (as PyTorch does) and gets no error back."""

    def __init__(self, channels: int, height: int, width: int, size: int = 2, name: str = "pool"):
        _check_positive(name, channels=channels, height=height, width=width, size=size)
        if size > height or size > width:
            raise ValueError(f"{name}: pool size {size} is larger than its input {height}x{width}")
        self.name = name
        self._cfg = PoolConfig(name, int(channels), int(height), int(width), int(size))

    @property
    def output_shape(self) -> tuple[int, ...]:
        c = self._cfg
        return (c.channels, c.height // c.size, c.width // c.size)

    def _windows(self, a: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` -> ``(N, C, Ho, Wo, size * size)``."""
        k = self._cfg.size
        n, ch, ho, wo = a.shape[0], *self.output_shape
        a = a[:, :, : ho * k, : wo * k].reshape(n, ch, ho, k, wo, k)
        return a.transpose(0, 1, 2, 4, 3, 5).reshape(n, ch, ho, wo, k * k)

    def _unwindow(self, spread: np.ndarray) -> np.ndarray:
        """The inverse layout of :meth:`_windows`, zeros on a dropped border."""
        k, c = self._cfg.size, self._cfg
        n, ch, ho, wo = spread.shape[:4]
        full = np.zeros((n, ch, c.height, c.width), dtype=spread.dtype)
        full[:, :, : ho * k, : wo * k] = (
            spread.reshape(n, ch, ho, wo, k, k)
            .transpose(0, 1, 2, 4, 3, 5)
            .reshape(n, ch, ho * k, wo * k)
        )
        return full


class MaxPool2D(_Pool):
    """The maximum of each window; the error goes back to the first maximum of its window.

    Window offset ``(ky, kx)`` of every window at once is one strided view of the input,
    so both passes are a few element-wise operations on views (no window copies), and the
    outputs keep the input's memory layout (:mod:`.layout`).
    """

    type_name: ClassVar[str] = "MaxPool2D"

    def _offsets(self, a: np.ndarray) -> list[np.ndarray]:
        """For each offset ``i = ky * size + kx`` (row-major in the window), the view
        ``(N, C, Ho, Wo)`` of the window entries at that offset."""
        k = self._cfg.size
        ho, wo = self.output_shape[1:]
        return [a[:, :, ky : ho * k : k, kx : wo * k : k] for ky in range(k) for kx in range(k)]

    def forward(self, a: np.ndarray) -> tuple[np.ndarray, PoolCache]:
        ops = accelerated_ops()
        if ops is not None:
            shape = (*a.shape[:2], *self.output_shape[1:])
            y = empty_in_layout(a, shape, a.dtype)
            done = ops.maxpool(a, self._cfg.size, y, empty_in_layout(a, shape, np.uint8))
            if done is not None:
                return done[0], PoolCache(done[1], a.shape[0])
        offsets = self._offsets(a)
        y = self._maximum(offsets)
        # the first maximum (deterministic on ties): the number of offsets before it,
        # counted while every offset so far is below the maximum
        where = np.zeros_like(y, dtype=np.min_scalar_type(len(offsets) - 1))
        below = np.not_equal(offsets[0], y)
        for view in offsets[1:]:
            where += below
            below &= np.not_equal(view, y)
        return y, PoolCache(where, a.shape[0])

    @staticmethod
    def _maximum(offsets: list[np.ndarray]) -> np.ndarray:
        y = offsets[0].copy(order="K")
        for view in offsets[1:]:
            np.maximum(y, view, out=y)
        return y

    def infer(self, a: np.ndarray) -> np.ndarray:
        if accelerated_ops() is not None:  # one C pass beats the offsets' numpy passes
            return self.forward(a)[0]
        return self._maximum(self._offsets(a))

    def backward(
        self, delta: np.ndarray, cache: PoolCache, params: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        c, where = self._cfg, cache.where
        full = empty_in_layout(where, (*delta.shape[:2], c.height, c.width), delta.dtype)
        ops = accelerated_ops()
        if ops is not None and ops.maxpool_backward(delta, where, c.size, full) is not None:
            return full
        ho, wo = delta.shape[2:]
        full[:, :, ho * c.size :] = 0  # a dropped border gets no error
        full[:, :, :, wo * c.size :] = 0
        for i, view in enumerate(self._offsets(full)):
            np.multiply(delta, where == i, out=view)
        return full


class AvgPool2D(_Pool):
    """The truncated mean of each window (``sum / size**2``, toward zero); backward gives
    every input of a window ``error / size**2``, truncating: the exact slope."""

    type_name: ClassVar[str] = "AvgPool2D"

    def forward(self, a: np.ndarray) -> tuple[np.ndarray, PoolCache]:
        total = self._windows(a).sum(axis=-1, dtype=np.int64)
        return trunc_div(total, self._cfg.size**2), PoolCache(None, a.shape[0])

    def backward(
        self, delta: np.ndarray, cache: PoolCache, params: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        share = trunc_div(delta, self._cfg.size**2)
        return self._unwindow(np.repeat(share[..., None], self._cfg.size**2, axis=-1))


@dataclass(frozen=True)
class FlattenConfig(LayerConfig):
    channels: int
    height: int
    width: int


class Flatten(ImageInput):
    """``(N, C, H, W)`` -> ``(N, C * H * W)``, in (c, y, x) order."""

    type_name: ClassVar[str] = "Flatten"

    def __init__(self, channels: int, height: int, width: int, name: str = "flatten") -> None:
        _check_positive(name, channels=channels, height=height, width=width)
        self.name = name
        self._cfg = FlattenConfig(name, int(channels), int(height), int(width))

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (math.prod(self.input_shape),)

    def forward(self, a: np.ndarray) -> tuple[np.ndarray, int]:
        return a.reshape(a.shape[0], -1), a.shape[0]

    def backward(
        self, delta: np.ndarray, cache: int, params: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        return delta.reshape(cache, *self.input_shape)
