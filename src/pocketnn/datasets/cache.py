"""The verified cache: where it lives, the shipped sha256 table, checking files against it,
and reading and writing the decompressed files in ``<root>/<name>/<stem>``.

Writes go through :func:`pocketnn.io.atomic.atomic_write_bytes`, so a reader never sees half a
file. The cache never removes or replaces a file it did not write: the root may be a folder
of the user's (``POCKETNN_DATA``), holding their own copies. Each file the cache writes is
recorded in ``<root>/<name>/.pocketnn-written.json`` by device, inode and modification
time; a file that is not recorded, or was written since by anyone else, is the user's and
is only ever read.
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


WRITTEN = ".pocketnn-written.json"
"""The record, in each dataset's cache folder, of the files the cache wrote there."""


def verified(name: str, stem: str, path: Path) -> bytearray:
    """Decompressed content of ``path`` after checking its sha256 and size.

    No more than the expected size is read or inflated.
    """
    exp = checksums()[name][stem]
    data = read_bytes(path, expected=exp["bytes"])
    got = hashlib.sha256(data).hexdigest()
    if got != exp["sha256"] or len(data) != exp["bytes"]:
        raise DatasetError(
            f"{path}: checksum mismatch for {name}/{stem}: expected sha256 "
            f"{exp['sha256']} ({exp['bytes']} bytes), got {got} ({len(data)} bytes)"
        )
    return data


def _identity(path: Path) -> list[int] | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_mtime_ns]


def _written(cache: Path) -> dict[str, list[int]]:
    """The record of the files the cache wrote in ``cache`` (empty if none or unreadable)."""
    try:
        record = json.loads((cache / WRITTEN).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def written_by_cache(cache: Path, stem: str) -> bool:
    """Whether ``cache/stem`` is the very file the cache wrote (and nobody wrote since)."""
    mine = _written(cache).get(stem)
    return mine is not None and mine == _identity(cache / stem)


def load_cache(name: str, cache: Path) -> dict[str, bytearray]:
    """Verified content of each cached file of ``name`` in ``cache``.

    A file that fails verification is removed, so that the next load fetches it again,
    but only if the cache wrote it; anyone else's file is left as it is.
    """
    if missing := [s for s in STEMS if not (cache / s).exists()]:
        raise DatasetError(f"not cached: {', '.join(missing)}")
    out = {}
    for stem in STEMS:
        try:
            out[stem] = verified(name, stem, cache / stem)
        except DatasetError as e:
            if not written_by_cache(cache, stem):
                raise DatasetError(
                    f"{e} (not written by pocketnn's cache: left as it is; replace or remove "
                    "it yourself)"
                ) from e
            (cache / stem).unlink(missing_ok=True)
            raise DatasetError(f"{e} (removed from cache)") from e
    return out


def store_cache(cache: Path, raw: dict[str, bytes | bytearray]) -> list[str]:
    """Write each file's verified content into ``cache``, atomically; raises OSError.

    A file already there that the cache did not write is kept, not replaced; returns the
    stems of such files.
    """
    kept = [s for s in STEMS if (cache / s).exists() and not written_by_cache(cache, s)]
    record = {s: i for s, i in _written(cache).items() if s in STEMS and s not in kept}
    for stem in STEMS:
        if stem in kept:
            continue
        atomic_write_bytes(cache / stem, raw[stem])
        record[stem] = _identity(cache / stem)
        atomic_write_bytes(cache / WRITTEN, json.dumps(record).encode())
    return kept
