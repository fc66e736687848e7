"""Reading a ``.npz`` archive of integer arrays within the input limit, without surprises.

``numpy.load`` trusts what an archive declares: a member's npy header can ask for any
amount of memory, a 1 MB deflated member can inflate to gigabytes, and a member compressed
with a method ``zipfile`` does not know raises ``NotImplementedError``. Here every declared
size is checked before anything of that size is allocated or inflated:

* the file is a regular file within the limit (:func:`pocketnn.io.files.open_regular`);
* members are stored or deflated (what ``numpy.savez`` writes), not encrypted, not
  repeated, and their declared sizes together stay within the limit;
* a member is inflated to at most its declared size (``zipfile`` stops there and checks
  the CRC, so a lying size costs no more than the size it declares);
* its npy header declares an integer dtype and a shape whose bytes are exactly the rest of
  the member.

Every refusal raises the caller's error type with one line naming the file.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
import zlib

import numpy as np

from .files import open_regular
from .limits import max_input, too_large

MAX_MEMBERS = 4096
"""More arrays than any model has; a central directory of millions of entries is refused."""
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError)


def read_npz(
    path: str | os.PathLike, error: type[Exception], what: str = "model file"
) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` file ``path``, by name; integer arrays only.

    Raises ``error`` for anything but a well-formed archive of integer arrays within the
    input limit; ``what`` names the kind of file in messages.
    """
    with open_regular(path, error, what) as f:
        try:
            archive = zipfile.ZipFile(f)
        except (*_READ_ERRORS, NotImplementedError) as exc:
            raise error(f"{path}: not a readable {what} (not a zip archive: {exc})") from None
        with archive:
            members = _members(archive, path, error)
            return {name: _read_member(archive, info, path, error) for name, info in members}


def _members(archive: zipfile.ZipFile, path, error) -> list[tuple[str, zipfile.ZipInfo]]:
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise error(f"{path}: {len(infos)} archive entries; pocketnn reads at most {MAX_MEMBERS}")
    declared = sum(info.file_size for info in infos)
    if declared > max_input():
        raise error(too_large(str(path), declared, "bytes of arrays (declared)"))
    seen, out = set(), []
    for info in infos:
        name = info.filename
        if info.compress_type not in _METHODS:
            raise error(
                f"{path}: entry {name!r} uses compression method {info.compress_type}; "
                "pocketnn reads entries stored or deflated (as numpy writes them)"
            )
        if info.flag_bits & 0x1:
            raise error(f"{path}: entry {name!r} is encrypted")
        if not name.endswith(".npy") or name in seen:
            raise error(f"{path}: unexpected archive entry {name!r}")
        seen.add(name)
        out.append((name[: -len(".npy")], info))
    return out


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path, error) -> np.ndarray:
    where = f"{path}: {info.filename.removesuffix('.npy')}"
    try:
        with archive.open(info) as member:
            data = member.read(info.file_size + 1)  # never more: zipfile stops at the size
    except (*_READ_ERRORS, NotImplementedError) as exc:
        raise error(f"{where}: corrupt ({exc})") from None
    if len(data) != info.file_size:
        raise error(f"{where}: holds {len(data)} bytes, declares {info.file_size}")
    return parse_npy(data, where, error)


def parse_npy(data: bytes, where: str, error: type[Exception]) -> np.ndarray:
    """An integer array from the bytes of one ``.npy`` file, checked against its header."""
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
        else:
            raise ValueError(f"npy format version {version} is not supported")
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as exc:
        raise error(f"{where}: not a valid npy array ({exc})") from None
    if dtype.hasobject or dtype.fields:
        raise error(f"{where}: not a readable .npz of plain arrays (it holds {dtype} values)")
    if dtype.kind not in "iu":
        raise error(
            f"{where} has dtype {dtype}; pocketnn reads integers (scale and round the data to "
            "an integer type first)"
        )
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise error(f"{where}: invalid shape {shape}")
    # numpy sizes arrays in int64, even empty ones: a zero does not excuse the other sides
    if len(shape) > 32 or math.prod(d for d in shape if d) >= 2**62:
        raise error(f"{where}: invalid shape {shape[:8]} ({len(shape)} dimensions)")
    count = math.prod(shape)
    body = len(data) - buf.tell()
    if count * dtype.itemsize != body:
        raise error(
            f"{where}: header declares shape {shape} of {dtype} ({count * dtype.itemsize} "
            f"bytes) but {body} bytes follow"
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=buf.tell())
    array = flat.reshape(shape, order="F" if fortran else "C")
    return np.array(array, dtype=dtype.newbyteorder("="), order="C")  # writeable, owned
