"""Build the ``compiled`` engine's kernels once, cache them, load them with ctypes.

The C sources (``kernels.c``: training and test passes; ``matmul.c``: the exact matrix
product; ``layer_ops.c``: the element-wise and folding work of the layered step; shipped
with the package) are compiled with the host's C compiler into one shared
library in the kernel cache (``$POCKETNN_KERNELS``, else
``$XDG_CACHE_HOME/pocketnn/kernels``, else ``~/.cache/pocketnn/kernels``), named by a hash
of the sources, the flags and the CPU, so a changed source or another CPU builds anew and
an unchanged one loads in milliseconds. ``scripts/setup.sh`` builds it
(``python -m pocketnn.engines.compiled``), so the first epoch after setup compiles nothing.
The library is loaded with :mod:`ctypes`: no Python headers are needed, and calls release
the GIL.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from ...core.context import COMPILED_HINT, c_compiler

SOURCES = tuple(Path(__file__).with_name(name) for name in ("kernels.c", "matmul.c", "layer_ops.c"))
ABI = 1
"""The layout of the structures ``kernels.c`` takes; its ``pnn_abi()`` must return it."""
FLAGS = ("-O3", "-std=c11", "-fPIC", "-shared", "-pthread")
NATIVE = ("-march=native",)
"""Tried first: the host's vector units (AVX-512, AVX2, NEON, ...); plain FLAGS otherwise."""


class BuildError(RuntimeError):
    """The kernels could not be built: the message has the compiler's own."""


def cache_dir() -> Path:
    """Where built kernels are kept."""
    if os.environ.get("POCKETNN_KERNELS"):
        return Path(os.environ["POCKETNN_KERNELS"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pocketnn" / "kernels"


def _cpu() -> str:
    """What ``-march=native`` depends on: the CPU's feature flags where Linux lists them."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def library_path() -> Path:
    """The cache file of the kernels for these sources, these flags and this CPU."""
    digest = hashlib.sha256()
    for source in SOURCES:
        text = source.read_bytes()
        digest.update(f"{source.name} {len(text)}\n".encode() + text)
    digest.update(repr((FLAGS, NATIVE, ABI, platform.machine(), _cpu())).encode())
    return cache_dir() / f"pocketnn-kernels-{digest.hexdigest()[:16]}.so"


def cached_library() -> Path | None:
    """The built library if it is in the cache, else None."""
    path = library_path()
    return path if path.is_file() else None


def compile_library(path: Path, flags: tuple[str, ...]) -> None:
    """Compile the sources with ``flags`` into ``path``, atomically.

    The compiler writes a temporary file in the same folder, which is then renamed into
    place: a reader never sees half a library, and two processes building at once both
    succeed. Raises :class:`BuildError` with the compiler's message.
    """
    cc = c_compiler()
    if cc is None:
        raise BuildError(COMPILED_HINT)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        command = [cc, *flags, "-o", tmp, *map(str, SOURCES)]
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise BuildError(f"{' '.join(command)}: {run.stderr.strip()}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build(force: bool = False) -> Path:
    """Compile the kernels into the cache (unless already there) and return the library:
    for the host's vector units if the compiler can, else with the portable flags."""
    path = library_path()
    if path.is_file() and not force:
        return path
    try:
        compile_library(path, FLAGS + NATIVE)
    except BuildError as native:
        try:
            compile_library(path, FLAGS)
        except BuildError as portable:
            raise BuildError(
                f"cannot build the compiled engine's kernels (choose another with --engine "
                f"fused or blas): {native} | {portable}"
            ) from None
    return path


def load(path: Path) -> ctypes.CDLL:
    """A built library, loaded, with its functions' signatures set."""
    lib = ctypes.CDLL(str(path))
    lib.pnn_abi.restype = ctypes.c_int64
    if lib.pnn_abi() != ABI:
        raise BuildError(f"{path}: kernels of another layout; rebuild with --force")
    pointer, int64 = ctypes.c_void_p, ctypes.c_int64
    lib.pnn_train.argtypes = [pointer, pointer]
    lib.pnn_train.restype = int64
    lib.pnn_scores.argtypes = [pointer, pointer, int64, int64, int64, int64, int64, int64]
    lib.pnn_scores.argtypes += [pointer, pointer]
    lib.pnn_scores.restype = int64
    lib.pnn_matmul.argtypes = [int64] * 3 + [pointer, int64, int64, int64] * 2
    lib.pnn_matmul.argtypes += [int64, int64, int64, pointer, pointer, int64]
    lib.pnn_matmul.restype = int64
    lib.pnn_matmul_work.argtypes = [int64] * 4
    lib.pnn_matmul_work.restype = int64
    lib.pnn_shift_div.argtypes = [pointer, int64, int64, pointer]
    lib.pnn_fold.argtypes = [pointer] + [int64] * 8 + [pointer]
    lib.pnn_table.argtypes = [pointer] + [int64] * 5 + [pointer, int64, pointer, int64]
    lib.pnn_table.argtypes += [pointer, pointer]
    lib.pnn_divide.argtypes = [pointer, pointer, int64, int64, pointer]
    lib.pnn_maxpool.argtypes = [pointer, int64, pointer] + [int64] * 5
    lib.pnn_maxpool.argtypes += [pointer, pointer, pointer, pointer]
    lib.pnn_maxpool_backward.argtypes = [pointer] * 4 + [int64] * 5 + [pointer, pointer]
    lib.pnn_momentum.argtypes = [int64, pointer, pointer, pointer, int64, pointer]
    lib.pnn_momentum.argtypes += [int64] * 3 + [pointer, pointer]
    for name in ("shift_div", "fold", "table", "divide", "maxpool", "maxpool_backward", "momentum"):
        getattr(lib, f"pnn_{name}").restype = int64
    return lib


@functools.cache
def library() -> ctypes.CDLL:
    """The kernels of this process (built first if needed)."""
    return load(build())
