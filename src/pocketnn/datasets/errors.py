"""The one exception of :mod:`pocketnn.datasets`, raised by every module of the package."""

from __future__ import annotations

from ..errors import PocketnnError


class DatasetError(PocketnnError, ValueError):
    """A dataset file is malformed or fails verification, or no source could provide it."""
