"""Layers on one protocol (:mod:`.base`); :data:`LAYER_TYPES` lists every layer type.

To add a layer: write a class that implements :class:`~.base.Layer` (with a frozen
``config`` dataclass and a ``type_name``) in a module of its own, then list it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .base import Gradient, Layer, LayerConfig
from .conv import Conv2D
from .dense import WEIGHT_CLAMP, Dense, DenseConfig, param_dtype
from .elementwise import ActivationLayer, Scale, scale_divisor
from .shape_layers import AvgPool2D, Flatten, MaxPool2D

LAYER_TYPES = MappingProxyType(
    {
        cls.type_name: cls
        for cls in (Dense, Conv2D, MaxPool2D, AvgPool2D, Flatten, Scale, ActivationLayer)
    }
)
"""Layer classes by the type name stored in model files."""


def build_layer(type_name: str, config: Mapping[str, Any]) -> Layer:
    """A layer from its type name and config fields, as stored in a model file."""
    try:
        cls = LAYER_TYPES[type_name]
    except KeyError:
        raise ValueError(
            f"unknown layer type {type_name!r}; known: {', '.join(LAYER_TYPES)}"
        ) from None
    return cls(**dict(config))


__all__ = [
    "LAYER_TYPES",
    "ActivationLayer",
    "AvgPool2D",
    "Conv2D",
    "Flatten",
    "MaxPool2D",
    "Scale",
    "scale_divisor",
    "WEIGHT_CLAMP",
    "Dense",
    "DenseConfig",
    "Gradient",
    "Layer",
    "LayerConfig",
    "build_layer",
    "param_dtype",
]
