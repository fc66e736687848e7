"""The verified cache: where it lives, the shipped sha256 table, checking files against it,
and reading and writing the decompressed files in ``<root>/<name>/<stem>``.

Writes go through :func:`pocketnn.io.atomic.atomic_write_bytes`, so a reader never sees half a
file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from importlib import resources
from pathlib import Path

from ..io.atomic import atomic_write_bytes
from .catalog import STEMS
from .errors import DatasetError
from .idx import read_bytes


@functools.cache
def checksums() -> dict:
    """Return the shipped table ``{name: {stem: {"sha256": str, "bytes": int}}}``."""
    text = (resources.files("pocketnn") / "data" / "checksums.json").read_text("utf-8")
    return json.loads(text)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Cache root: ``cache_dir``, else ``$POCKETNN_DATA``, else ``$XDG_CACHE_HOME/pocketnn``,
    else ``~/.cache/pocketnn``. Files live in ``<root>/<name>/<stem>``, decompressed."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("POCKETNN_DATA"):
        return Path(os.environ["POCKETNN_DATA"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "pocketnn"


def verified(name: str, stem: str, path: Path) -> bytearray:
    """Decompressed content of ``path`` after checking its sha256 and size."""
    data = read_bytes(path)
    exp = checksums()[name][stem]
    got = hashlib.sha256(data).hexdigest()
    if got != exp["sha256"] or len(data) != exp["bytes"]:
        raise DatasetError(
            f"{path}: checksum mismatch for {name}/{stem}: expected sha256 "
            f"{exp['sha256']} ({exp['bytes']} bytes), got {got} ({len(data)} bytes)"
        )
    return data


def load_cache(name: str, cache: Path) -> dict[str, bytearray]:
    """Verified content of each cached file of ``name`` in ``cache``; a file that fails
    verification is removed, so that the next load fetches it again."""
    if missing := [s for s in STEMS if not (cache / s).is_file()]:
        raise DatasetError(f"not cached: {', '.join(missing)}")
    out = {}
    for stem in STEMS:
        try:
            out[stem] = verified(name, stem, cache / stem)
        except DatasetError as e:
            (cache / stem).unlink(missing_ok=True)
            raise DatasetError(f"{e} (removed from cache)") from e
    return out


def store_cache(cache: Path, raw: dict[str, bytes | bytearray]) -> None:
    """Write each file's verified content into ``cache``, atomically; raises OSError."""
    for stem in STEMS:
        atomic_write_bytes(cache / stem, raw[stem])
