"""A user's own data: an ``.npz`` of integer arrays, a CSV, or a folder of PNG images.

* ``.npz``: integer arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``; samples are
  vectors ``(N, F)`` or images ``(N, H, W)`` / ``(N, C, H, W)``; any integer dtype whose
  values fit int16; labels are class indices ``0..K-1``.
* ``.csv``: a header row, then one sample per row; the label column is named by
  ``label_column``, every other column is an integer feature. Labels that are all integers
  are class indices; otherwise they are class names (sorted). A seeded ``test_percent`` of
  the rows becomes the test set.
* a folder: one subfolder per class holding PNG images (8-bit grayscale or RGB, all of one
  size and kind); ``train/`` and ``test/`` subfolders, each laid out so, give the split,
  otherwise a seeded ``test_percent`` of each class's images is the test set.

Samples keep their shape (``Dataset.input_spec.shape``); the input type is the arrays' own
dtype when it is uint8, int8 or int16, else the smallest of those holding every value
(see :class:`pocketnn.nn.inputs.InputSpec`). Anything malformed raises :class:`DatasetError`
with one line naming the file and what is wrong.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from ..io.files import read_regular
from ..io.limits import max_input, too_large
from ..io.npz import read_npz
from ..nn.inputs import INPUT_TYPES, InputSpec
from .catalog import Dataset
from .errors import DatasetError
from .split import STREAM_TEST, holdout

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
INT16_LOW, INT16_HIGH = INPUT_TYPES["int16"]


def load_user_data(
    path: str | os.PathLike,
    *,
    label_column: str = "label",
    test_percent: int = 20,
    split_seed: int = 0,
) -> Dataset:
    """Load a user's dataset from an ``.npz``, a ``.csv`` or a folder of class folders."""
    path = Path(path)
    if not 0 < test_percent < 100:
        raise DatasetError(f"{path}: the test percentage must lie in 1..99, got {test_percent}")
    if path.is_dir():
        return _from_folder(path, test_percent, split_seed)
    if not path.exists():  # anything else but a regular file is refused by its reader
        raise DatasetError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _from_npz(path)
    if suffix == ".csv":
        return _from_csv(path, label_column, test_percent, split_seed)
    raise DatasetError(
        f"{path}: unknown data format {suffix or '(no suffix)'}; "
        "give an .npz, a .csv or a folder of class subfolders"
    )


def _assemble(
    path: Path,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    classes: tuple[str, ...],
) -> Dataset:
    """Check the four arrays together and make the Dataset, in the smallest dtype."""
    if len(x_train) == 0 or len(x_test) == 0:
        raise DatasetError(f"{path}: no {'training' if len(x_train) == 0 else 'test'} samples")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(
            f"{path}: training samples have shape {x_train.shape[1:]} but test samples "
            f"{x_test.shape[1:]}"
        )
    try:
        spec = InputSpec.for_arrays((x_train, x_test), x_train.shape[1:])
    except ValueError as exc:
        raise DatasetError(f"{path}: input {exc}; scale the data to fit int16") from None
    n_classes = len(classes)
    for name, y in (("training", y_train), ("test", y_test)):
        if y.size and (int(y.min()) < 0 or int(y.max()) >= n_classes):
            raise DatasetError(
                f"{path}: {name} label {int(y.min()) if y.min() < 0 else int(y.max())} is out "
                f"of range: labels are class indices 0..{n_classes - 1}"
            )
    if n_classes < 2:
        raise DatasetError(f"{path}: the training labels name {n_classes} class; need 2 or more")
    label_dtype = np.uint8 if n_classes <= 256 else np.int32
    dtype = np.dtype(spec.dtype)
    return Dataset(
        path.stem,
        x_train.astype(dtype, copy=False),
        y_train.astype(label_dtype, copy=False),
        x_test.astype(dtype, copy=False),
        y_test.astype(label_dtype, copy=False),
        classes=classes,
        input_spec=spec,
    )


# ---------------------------------------------------------------- .npz


def _from_npz(path: Path) -> Dataset:
    arrays = read_npz(path, DatasetError, ".npz file")  # integers only, within the limit
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise DatasetError(
            f"{path}: missing array(s) {', '.join(missing)}; an .npz dataset holds "
            f"{', '.join(NPZ_KEYS)}"
        )
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim not in (2, 3, 4):
            raise DatasetError(
                f"{path}: x_{part} has shape {x.shape}; samples must be vectors (N, F) "
                "or images (N, H, W) / (N, C, H, W)"
            )
        if y.ndim != 1:
            raise DatasetError(f"{path}: y_{part} has shape {y.shape}; labels must be (N,)")
        if len(x) != len(y):
            raise DatasetError(f"{path}: x_{part} has {len(x)} samples but y_{part} {len(y)}")
        if 0 in x.shape[1:]:
            raise DatasetError(f"{path}: x_{part} has empty samples, shape {x.shape}")
    y_train = arrays["y_train"]
    if y_train.size and int(y_train.min()) < 0:
        raise DatasetError(f"{path}: y_train label {int(y_train.min())} is negative")
    n_classes = int(y_train.max()) + 1 if y_train.size else 0
    classes = tuple(str(c) for c in range(n_classes))
    return _assemble(path, *(arrays[k] for k in NPZ_KEYS), classes)


# ---------------------------------------------------------------- .csv


def _parse_int(text: str, path: Path, line: int, column: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise DatasetError(
            f"{path}: line {line}, column {column!r}: {text!r} is not an integer"
        ) from None


def read_csv(path: Path, label_column: str, labelled: bool = True) -> tuple[np.ndarray, list]:
    """Features (N, F) int16 and the label column's texts of a CSV with a header row; with
    ``labelled=False`` the label column may be absent (its texts are then empty).

    Read as a regular file within the input limit; each row is kept as int16 once its
    values are checked, so memory stays near the file's size.
    """
    try:
        text = read_regular(path, DatasetError, "CSV file").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not a readable CSV file ({exc})") from None
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(rows)]
    except StopIteration:
        raise DatasetError(
            f"{path}: empty file; expected a header row, then one sample per row"
        ) from None
    except csv.Error as exc:
        raise DatasetError(f"{path}: not a readable CSV file ({exc})") from None
    if label_column not in header and labelled:
        raise DatasetError(
            f"{path}: no label column {label_column!r} in the header "
            f"(columns: {', '.join(header[:8])}{', ...' if len(header) > 8 else ''})"
        )
    at = header.index(label_column) if label_column in header else -1
    if len(header) - (at >= 0) == 0:
        raise DatasetError(f"{path}: no feature column besides the label {label_column!r}")
    labels, values = [], []
    try:
        for line, row in enumerate(rows, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue  # a blank line, e.g. at the end
            if len(row) != len(header):
                raise DatasetError(
                    f"{path}: line {line} has {len(row)} fields, the header has {len(header)}"
                )
            labels.append(row[at].strip() if at >= 0 else "")
            ints = [
                _parse_int(cell, path, line, header[i]) for i, cell in enumerate(row) if i != at
            ]
            if min(ints) < INT16_LOW or max(ints) > INT16_HIGH:
                raise DatasetError(
                    f"{path}: line {line}: feature values reach [{min(ints)}, {max(ints)}], "
                    "beyond int16; scale the data to fit int16"
                )
            values.append(np.array(ints, dtype=np.int16))
    except csv.Error as exc:
        raise DatasetError(f"{path}: not a readable CSV file ({exc})") from None
    if not values:
        raise DatasetError(f"{path}: no sample rows after the header")
    return np.stack(values), labels


def _from_csv(path: Path, label_column: str, test_percent: int, seed: int) -> Dataset:
    x, labels = read_csv(path, label_column)
    try:
        indices = [int(label) for label in labels]
    except ValueError:
        indices = None
    if indices is not None:
        if min(indices) < 0:
            raise DatasetError(f"{path}: label {min(indices)} is negative")
        classes = tuple(str(c) for c in range(max(indices) + 1))
        y = np.array(indices, dtype=np.int64)
    else:
        classes = tuple(sorted(set(labels)))
        y = np.array([classes.index(label) for label in labels], dtype=np.int64)
    kept, held = holdout(len(y), len(y) * test_percent // 100, seed, STREAM_TEST)
    return _assemble(path, x[kept], y[kept], x[held], y[held], classes)


# ---------------------------------------------------------------- image folders


def read_png(path: Path) -> np.ndarray:
    """One PNG as uint8 (H, W) for grayscale or (3, H, W) for colour.

    Read as a regular file within the input limit; the size its IHDR declares is checked
    (against the limit and Pillow's own bound) before any pixel is decoded.
    """
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError("reading PNG needs Pillow: pip install 'pocketnn[images]'") from None
    raw = bytes(read_regular(path, DatasetError, "PNG file"))
    if raw[:8] != PNG_MAGIC or raw[12:16] != b"IHDR" or len(raw) < 24:
        raise DatasetError(f"{path}: not a readable PNG image (no PNG signature and IHDR)")
    width, height = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    pixels = width * height
    if 3 * pixels > max_input() or pixels > (Image.MAX_IMAGE_PIXELS or pixels):
        raise DatasetError(too_large(str(path), 3 * pixels, f"bytes of pixels ({width}x{height})"))
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as im:
            if im.format != "PNG":
                raise DatasetError(f"{path}: not a PNG image ({im.format})")
            mode = im.mode
            if mode in ("1", "L", "LA"):
                return np.asarray(im.convert("L"), dtype=np.uint8)
            if mode in ("P", "RGB", "RGBA"):
                return np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
    except DatasetError:
        raise
    except Exception as exc:  # Pillow's: SyntaxError, struct.error, zlib.error, OSError...
        raise DatasetError(
            f"{path}: not a readable PNG image ({type(exc).__name__}: {exc})"
        ) from None
    raise DatasetError(f"{path}: PNG mode {mode} is not supported; use 8-bit grayscale or RGB")


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_classes(root: Path, classes: tuple[str, ...]) -> tuple[list[np.ndarray], list[int]]:
    images: list[np.ndarray] = []
    labels: list[int] = []
    first: tuple[Path, tuple[int, ...]] | None = None
    for label, name in enumerate(classes):
        folder = root / name
        files = (
            sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
            if folder.is_dir()
            else []
        )
        if not files:
            raise DatasetError(f"{folder}: class folder with no PNG image")
        for file in files:
            image = read_png(file)
            if first is None:
                first = (file, image.shape)
            elif image.shape != first[1]:
                raise DatasetError(
                    f"{file}: {_describe(image.shape)} where {first[0]} is "
                    f"{_describe(first[1])}; every image must have the same size and kind"
                )
            images.append(image)
            labels.append(label)
    return images, labels


def _describe(shape: tuple[int, ...]) -> str:
    kind = "RGB" if len(shape) == 3 else "grayscale"
    return f"{shape[-1]}x{shape[-2]} {kind}"


def _from_folder(root: Path, test_percent: int, seed: int) -> Dataset:
    split = (root / "train").is_dir() and (root / "test").is_dir()
    train_root = root / "train" if split else root
    classes = tuple(p.name for p in _class_folders(train_root))
    if len(classes) < 2:
        raise DatasetError(
            f"{train_root}: found {len(classes)} class folder(s); need one subfolder per "
            "class (at least 2), each holding PNG images"
        )
    images, labels = _read_classes(train_root, classes)
    x, y = np.stack(images), np.array(labels, dtype=np.int64)
    if split:
        extra = sorted({p.name for p in _class_folders(root / "test")} - set(classes))
        if extra:
            raise DatasetError(f"{root / 'test'}: class folder(s) {extra} are not in train/")
        present = tuple(c for c in classes if (root / "test" / c).is_dir())
        test_images, test_labels = _read_classes(root / "test", present)
        x_test = np.stack(test_images)
        y_test = np.array([classes.index(present[i]) for i in test_labels], dtype=np.int64)
        if x_test.shape[1:] != x.shape[1:]:
            raise DatasetError(
                f"{root / 'test'}: images are {_describe(x_test.shape[1:])} but the training "
                f"images {_describe(x.shape[1:])}"
            )
        return _assemble(root, x, y, x_test, y_test, classes)
    kept_parts, held_parts = [], []
    for label in range(len(classes)):  # each class split apart: every class in both sets
        members = np.flatnonzero(y == label)
        kept, held = holdout(len(members), len(members) * test_percent // 100, seed, STREAM_TEST)
        kept_parts.append(members[kept])
        held_parts.append(members[held])
    kept, held = np.concatenate(kept_parts), np.concatenate(held_parts)
    return _assemble(root, x[kept], y[kept], x[held], y[held], classes)
