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

from ..io.files import open_regular, read_exactly
from ..io.limits import max_input, too_large
from .errors import DatasetError

MAX_DIMS = 16
"""More dimensions than any dataset has (numpy allows 64)."""
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4"}


def read_bytes(path: Path, expected: int | None = None) -> bytearray:
    """Return the content of ``path``, gunzipped if it starts with the gzip magic bytes.

    A bytearray, so that :func:`parse_idx` can view it as a writeable array without a copy
    (the MNIST training images are 47 MB). Nothing larger than the input limit (or than
    ``expected`` bytes, when the caller knows the size) is read or inflated: a gzip stream's
    size is taken from the idx header it starts with, checked, and exactly that much is
    inflated (plus one byte, to detect trailing data). Only regular files are read.
    """
    with open_regular(path, DatasetError, "idx file") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        if not gzipped:
            size = os.fstat(f.fileno()).st_size
            if expected is not None and size > expected:
                raise DatasetError(f"{path}: {size} bytes where {expected} are expected")
            return read_exactly(f, size, str(path), DatasetError)
        try:
            with gzip.GzipFile(fileobj=f) as g:
                return _inflate_idx(g, path, expected)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"{path}: corrupt gzip data ({e})") from e


def _inflate_idx(g: gzip.GzipFile, path: Path, expected: int | None) -> bytearray:
    """The idx content of a gzip stream, inflating no more than its header declares."""
    head = g.read(4)
    if len(head) == 4 and head[0] == head[1] == 0:
        head += g.read(4 * head[3])
    _, shape, size = header(head, str(path))
    limit = max_input() if expected is None else min(expected, max_input())
    if size > limit:
        if expected is not None and size <= max_input():
            raise DatasetError(f"{path}: declares {size} bytes where {expected} are expected")
        raise DatasetError(too_large(str(path), size, "bytes (declared by its idx header)"))
    data = read_exactly(g, size - len(head), str(path), DatasetError)
    if g.read(1):
        raise DatasetError(
            f"{path}: trailing bytes: header {shape} needs exactly {size} bytes, the gzip "
            "stream holds more"
        )
    return head + data


def header(data: bytes | bytearray, where: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """``(dtype, shape, total bytes)`` an idx file's header declares (from its first bytes)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{where}: not an idx file (magic {bytes(data[:4]).hex() or 'empty'})")
    code, ndim = data[2], data[3]
    if code in (0x0D, 0x0E):
        raise DatasetError(
            f"{where}: floating-point idx data (type 0x{code:02x}) is not "
            "supported; pocketnn is integer-only"
        )
    if code not in _IDX_DTYPES:
        raise DatasetError(f"{where}: unknown idx data type 0x{code:02x}")
    length = 4 + 4 * ndim
    if ndim == 0 or len(data) < length:
        raise DatasetError(f"{where}: bad idx header ({ndim} dimensions, {len(data)} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    # numpy sizes arrays in int64, even empty ones: a zero does not excuse the other sides
    if ndim > MAX_DIMS or math.prod(d for d in shape if d) >= 2**62:
        raise DatasetError(f"{where}: bad idx header ({ndim} dimensions, sides {shape[:8]})")
    dtype = np.dtype(_IDX_DTYPES[code])
    return dtype, shape, length + math.prod(shape) * dtype.itemsize


def parse_idx(data: bytes | bytearray, where: str) -> np.ndarray:
    """Parse the idx content ``data``; ``where`` names its origin in error messages."""
    dtype, shape, expected = header(data, where)
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "trailing bytes"
        raise DatasetError(
            f"{where}: {kind}: header {shape} of {dtype.name} needs exactly "
            f"{expected} bytes, file has {len(data)}"
        )
    offset = 4 + 4 * len(shape)
    flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset)
    native = dtype.newbyteorder("=")
    if isinstance(data, bytearray) and dtype == native:
        return flat.reshape(shape)  # a writeable view of a buffer nobody else holds
    return flat.reshape(shape).astype(native)  # a fresh copy in native byte order


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file, raw or gzip-compressed (detected by content, not extension).

    Returns a fresh array with the header's shape and integer dtype, in native byte order.
    Raises `DatasetError` for a bad magic, a floating-point or unknown type code, a payload
    whose size is not exactly what the header announces, a size beyond the input limit
    (:func:`pocketnn.io.limits.input_limit`) or a path that is not a regular file.
    """
    return parse_idx(read_bytes(Path(path)), str(path))
