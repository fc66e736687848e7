"""Learning rules by name; each is a small :class:`~.base.LearningRule` of its own module."""

from __future__ import annotations

from types import MappingProxyType

from .base import LearningRule, trainable
from .bp import Backprop
from .dfa import DFA, random_feedback

RULES = MappingProxyType({cls.name: cls for cls in (DFA, Backprop)})


__all__ = ["DFA", "RULES", "Backprop", "LearningRule", "random_feedback", "trainable"]
