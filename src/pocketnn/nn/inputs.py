"""What a model takes as input: the integer type of one value and the shape of one sample.

The type travels with the model (model files store it, see :mod:`pocketnn.io.model_file`)
because the generated C declares its inputs with it and proves its integer widths from its
range: an int16 sensor reading is not a uint8 pixel. The shape is the sample shape of the
data the model was trained on (``(8, 8)`` for small images, ``(3, 32, 32)`` for colour
ones), kept even when an MLP sees the sample flattened.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

INPUT_TYPES: dict[str, tuple[int, int]] = {
    "uint8": (0, 255),
    "int8": (-128, 127),
    "int16": (-32768, 32767),
}
"""The input types a model can declare, smallest first, with their ranges."""


def smallest_input_type(low: int, high: int) -> str | None:
    """The first of :data:`INPUT_TYPES` holding ``[low, high]``, or None when none does."""
    for name, (lo, hi) in INPUT_TYPES.items():
        if lo <= low and high <= hi:
            return name
    return None


@dataclass(frozen=True)
class InputSpec:
    """One value's integer type (a key of :data:`INPUT_TYPES`) and one sample's shape."""

    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.dtype not in INPUT_TYPES:
            raise ValueError(f"input type {self.dtype!r} is not one of {', '.join(INPUT_TYPES)}")
        shape = tuple(int(n) for n in self.shape)
        if not shape or min(shape) < 1:
            raise ValueError(f"input shape {self.shape} must be non-empty and positive")
        object.__setattr__(self, "shape", shape)

    @property
    def low(self) -> int:
        return INPUT_TYPES[self.dtype][0]

    @property
    def high(self) -> int:
        return INPUT_TYPES[self.dtype][1]

    @property
    def size(self) -> int:
        """Values per sample (the width of an MLP's first layer)."""
        return math.prod(self.shape)

    def check(self, x: np.ndarray, where: str) -> None:
        """Refuse values outside the range with a ValueError naming ``where``."""
        if x.size and (int(x.min()) < self.low or int(x.max()) > self.high):
            raise ValueError(
                f"{where}: values lie in [{int(x.min())}, {int(x.max())}], outside the "
                f"model's {self.dtype} input range [{self.low}, {self.high}]"
            )

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "low": self.low, "high": self.high, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, record: Any) -> InputSpec:
        if not isinstance(record, dict) or not isinstance(record.get("shape"), list):
            raise ValueError(f"input record {record!r} needs a dtype and a shape")
        return cls(str(record.get("dtype")), tuple(record["shape"]))

    @classmethod
    def for_arrays(cls, arrays: Iterable[np.ndarray], shape: Sequence[int]) -> InputSpec:
        """The type integer ``arrays`` declare: their own dtype when it is one of
        :data:`INPUT_TYPES`, else the smallest one holding every value (ValueError if none)."""
        low, high = 0, 0
        for a in arrays:
            if a.dtype.name in INPUT_TYPES:
                lo, hi = INPUT_TYPES[a.dtype.name]
            elif a.size:
                lo, hi = int(a.min()), int(a.max())
            else:
                continue
            low, high = min(low, lo), max(high, hi)
        name = smallest_input_type(low, high)
        if name is None:
            raise ValueError(f"values reach [{low}, {high}], beyond int16")
        return cls(name, tuple(shape))

    @classmethod
    def default_for(cls, input_shape: Sequence[int]) -> InputSpec:
        """What a model file without an input record means: bytes, e.g. pixels 0..255."""
        return cls("uint8", tuple(input_shape))
