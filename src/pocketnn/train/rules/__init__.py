"""Learning rules by name; each is a small :class:`~.base.LearningRule` of its own module."""

from __future__ import annotations

from types import MappingProxyType

from .base import LearningRule, StepState, blocks, trainable
from .bp import Backprop
from .dfa import DFA, random_feedback
from .local import LocalLosses

RULES = MappingProxyType({cls.name: cls for cls in (DFA, Backprop, LocalLosses)})


__all__ = [
    "DFA",
    "RULES",
    "Backprop",
    "LearningRule",
    "LocalLosses",
    "StepState",
    "blocks",
    "random_feedback",
    "trainable",
]
