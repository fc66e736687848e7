"""The idx file format: read a file, raw or gzip-compressed, into an integer array.

Nothing here knows about MNIST or any other dataset; see :mod:`.catalog` for those.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from .errors import DatasetError

_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4"}


def read_bytes(path: Path) -> bytearray:
    """Return the content of ``path``, gunzipped if it starts with the gzip magic bytes.

    A bytearray, so that :func:`parse_idx` can view it as a writeable array without a copy
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


def parse_idx(data: bytes | bytearray, where: str) -> np.ndarray:
    """Parse the idx content ``data``; ``where`` names its origin in error messages."""
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
    return parse_idx(read_bytes(Path(path)), str(path))
