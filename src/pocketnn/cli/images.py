"""Reading the images ``predict`` classifies: 28x28 grayscale from PGM, PNG or idx files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..datasets import read_idx
from .errors import CLIError

_PGM_GAP = rb"(?:\s|#[^\n]*\n)+"  # white space and comment lines between header fields
_PGM_HEADER = re.compile(rb"(P[25])" + (_PGM_GAP + rb"(\d+)") * 3 + rb"\s")


def _read_pgm(raw: bytes, path: Path) -> np.ndarray:
    """A binary (P5) or plain (P2) 8-bit PGM, scaled to 0..255 when its maxval is lower."""
    header = _PGM_HEADER.match(raw)
    if header is None:
        raise CLIError(f"{path}: not a valid PGM header")
    w, h, maxval = (int(field) for field in header.groups()[1:])
    if not 1 <= maxval <= 255:
        raise CLIError(f"{path}: PGM maxval {maxval}: only 8-bit images (1..255) are supported")
    body = raw[header.end() :]
    if header.group(1) == b"P5":
        pixels = np.frombuffer(body[: w * h], dtype=np.uint8).astype(np.int64)
    else:
        try:
            pixels = np.array([int(token) for token in body.split()], dtype=np.int64)
        except ValueError:
            raise CLIError(f"{path}: a plain PGM pixel is not an integer") from None
    if pixels.size != w * h:
        raise CLIError(f"{path}: {pixels.size} pixels where the header announces {w * h}")
    if pixels.size and (pixels.min() < 0 or pixels.max() > maxval):
        raise CLIError(f"{path}: pixel values must lie in 0..{maxval}")
    return (pixels * 255 // maxval).reshape(1, h, w)


def read_images(path: Path) -> np.ndarray:
    """Read 28x28 grayscale images as (N, 784) uint8 from a PGM, PNG or idx file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CLIError(f"{path}: {exc.strerror}") from None
    if raw[:2] in (b"P5", b"P2"):
        images = _read_pgm(raw, path)
    elif raw[:8] == b"\x89PNG\r\n\x1a\n":
        try:
            from PIL import Image
        except ImportError:
            raise CLIError("reading PNG needs Pillow: pip install 'pocketnn[images]'") from None
        with Image.open(path) as im:
            images = np.asarray(im.convert("L"), dtype=np.uint8)[None]
    else:
        images = read_idx(path)
        if images.ndim == 2:
            images = images[None]
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise CLIError(f"{path}: expected 28x28 images, found an array of shape {images.shape}")
    if images.size and (int(images.min()) < 0 or int(images.max()) > 255):
        raise CLIError(f"{path}: pixel values must lie in 0..255")
    return images.reshape(images.shape[0], -1).astype(np.uint8)
