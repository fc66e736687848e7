"""Reading the images ``predict`` classifies: 28x28 grayscale from PGM, PNG or idx files.

Every file is read whole, once, as a regular file within the input limit
(:func:`pocketnn.io.files.read_regular`), and its size is checked in its header before any
pixel is decoded: a PNG or PGM that is not 28x28 (a decompression bomb declares millions of
pixels) is refused without decoding it. Every refusal is a one-line :class:`CLIError`
naming the file.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from ..datasets.idx import parse_idx
from ..io.files import read_regular
from .errors import CLIError

SIDE = 28
_PGM_GAP = rb"(?:\s|#[^\n]*\n)+"  # white space and comment lines between header fields
_PGM_HEADER = re.compile(rb"(P[25])" + (_PGM_GAP + rb"(\d+)") * 3 + rb"\s")
_PGM_INT = re.compile(rb"[+-]?[0-9]{1,4}")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_side(width: int, height: int, path: Path) -> None:
    if (width, height) != (SIDE, SIDE):
        raise CLIError(f"{path}: a {width}x{height} image; predict classifies 28x28 images")


def _read_pgm(raw: bytes, path: Path) -> np.ndarray:
    """A binary (P5) or plain (P2) 8-bit PGM, scaled to 0..255 when its maxval is lower."""
    header = _PGM_HEADER.match(raw)
    if header is None:
        raise CLIError(f"{path}: not a valid PGM header")
    w, h, maxval = (int(field) for field in header.groups()[1:])
    _check_side(w, h, path)
    if not 1 <= maxval <= 255:
        raise CLIError(f"{path}: PGM maxval {maxval}: only 8-bit images (1..255) are supported")
    body = raw[header.end() :]
    if header.group(1) == b"P5":
        pixels = np.frombuffer(body[: w * h], dtype=np.uint8).astype(np.int64)
    else:
        tokens = body.split(maxsplit=w * h)  # at most one token past the image
        if not all(_PGM_INT.fullmatch(token) for token in tokens[: w * h]):
            raise CLIError(f"{path}: a plain PGM pixel is not an integer")
        if len(tokens) > w * h:
            raise CLIError(f"{path}: more pixels than the header announces ({w * h})")
        pixels = np.array([int(token) for token in tokens], dtype=np.int64)
    if pixels.size != w * h:
        raise CLIError(f"{path}: {pixels.size} pixels where the header announces {w * h}")
    if pixels.size and (pixels.min() < 0 or pixels.max() > maxval):
        raise CLIError(f"{path}: pixel values must lie in 0..{maxval}")
    return (pixels * 255 // maxval).reshape(1, h, w)


def _read_png(raw: bytes, path: Path) -> np.ndarray:
    """A PNG, converted to 8-bit grayscale; its IHDR size is checked before Pillow decodes."""
    if len(raw) < 24 or raw[12:16] != b"IHDR":
        raise CLIError(f"{path}: not a valid PNG (no IHDR chunk)")
    _check_side(int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big"), path)
    try:
        from PIL import Image
    except ImportError:
        raise CLIError("reading PNG needs Pillow: pip install 'pocketnn[images]'") from None
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as im:
            return np.asarray(im.convert("L"), dtype=np.uint8)[None]
    except Exception as exc:  # Pillow's: SyntaxError, struct.error, zlib.error, OSError...
        raise CLIError(f"{path}: not a readable PNG ({type(exc).__name__}: {exc})") from None


def read_images(path: Path) -> np.ndarray:
    """Read 28x28 grayscale images as (N, 784) uint8 from a PGM, PNG or idx file."""
    raw = bytes(read_regular(path, CLIError, "image file"))
    if raw[:2] in (b"P5", b"P2"):
        images = _read_pgm(raw, path)
    elif raw[:8] == _PNG_MAGIC:
        images = _read_png(raw, path)
    else:
        images = parse_idx(raw, str(path))
        if images.ndim == 2:
            images = images[None]
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise CLIError(f"{path}: expected 28x28 images, found an array of shape {images.shape}")
    if images.size and (int(images.min()) < 0 or int(images.max()) > 255):
        raise CLIError(f"{path}: pixel values must lie in 0..255")
    return images.reshape(images.shape[0], -1).astype(np.uint8)
