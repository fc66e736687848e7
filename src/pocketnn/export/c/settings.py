"""What an export asks for (:class:`ExportSettings` and its defaults), and the error raised
when a model cannot be exported as asked."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import PocketnnError
from ...nn.losses import TARGET_VALUE

DEFAULT_MAX_BATCH = 20
DEFAULT_TARGET_VALUE = TARGET_VALUE
"""The one-hot target value when the model file names none: Python's own."""


class ExportError(PocketnnError, ValueError):
    """The model cannot be exported as asked (bad name, unsupported layer, missing feedback)."""


@dataclass
class ExportSettings:
    """What to generate: the C prefix, training or not, and its batch limit and target."""

    name: str = "model"
    with_training: bool = False
    max_batch: int = DEFAULT_MAX_BATCH
    target_value: int = DEFAULT_TARGET_VALUE
    source: str = "an in-memory model"
    input_type: str = "uint8"  # a key of pocketnn.nn.inputs.INPUT_TYPES
