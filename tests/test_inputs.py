"""Bounded reading: declared sizes are checked before anything large is allocated or inflated,
special files are refused without being read, and every refusal is one line naming the file.

Peak memory is measured with tracemalloc (numpy, zlib and bytes allocations are all
traced): refusing a file that would inflate to hundreds of megabytes must cost little.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import threading
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import pocketnn
from pocketnn import ModelFileError, build_mlp, load, save
from pocketnn.cli import main
from pocketnn.cli.errors import CLIError
from pocketnn.cli.images import read_images
from pocketnn.datasets import DatasetError, read_idx
from pocketnn.io.limits import DEFAULT_MAX_INPUT, input_limit

BIG = DEFAULT_MAX_INPUT + 2**20  # just past the limit
CHEAP = 32 * 2**20  # what refusing any of these files may cost at most


@contextlib.contextmanager
def peak_memory():
    """Yields a list that receives the traced peak (bytes) when the block ends."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def cli_line(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("pocketnn: error: "), err
    return lines[0]


def deflated_zeros(n: int) -> bytes:
    pack = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(2**20)
    parts = [pack.compress(block) for _ in range(n // len(block))]
    return b"".join([*parts, pack.compress(bytes(n % len(block))), pack.flush()])


def npy_header(shape, descr="|u1") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)}
    )
    return buf.getvalue()


def zip_bytes(entries) -> bytes:
    """A zip archive written field by field: ``(name, raw, method, declared size, crc,
    flags)`` per entry, ``raw`` already compressed with ``method``."""
    out, central = bytearray(), bytearray()
    for name, raw, method, size, crc, flags in entries:
        n, offset = name.encode(), len(out)
        out += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 20, flags, method, 0, 0, crc, len(raw), size, len(n), 0
        )
        out += n + raw
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            *(0x02014B50, 20, 20, flags, method, 0, 0, crc, len(raw), size, len(n)),
            *(0, 0, 0, 0, 0, offset),
        )
        central += n
    tail = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(out), 0
    )
    return bytes(out + central + tail)


def model_with_member(path: Path, name: str, raw: bytes, method=zipfile.ZIP_STORED, **fields):
    """A valid model file plus one more entry ``name`` holding ``raw`` (compressed with
    ``method``); ``fields`` may override its declared ``size``, ``crc`` and ``flags``."""
    save(path, build_mlp([4, 3]))
    with zipfile.ZipFile(path) as src:
        entries = [
            (info.filename, data, 0, len(data), zlib.crc32(data), 0)
            for info in src.infolist()
            for data in [src.read(info)]
        ]
    extra = (name, raw, method, fields.get("size", len(raw)), fields.get("crc", 0), 0)
    path.write_bytes(zip_bytes([*entries, extra]))


# --------------------------------------------------------------------------- model files


def test_a_model_file_inflating_past_the_limit_is_refused_before_inflating(tmp_path):
    path = tmp_path / "bomb.npz"
    raw = deflated_zeros(BIG)
    model_with_member(path, "big.npy", raw, zipfile.ZIP_DEFLATED, size=BIG)
    assert path.stat().st_size < 2**20  # a 300 KB file declaring 257 MB
    with peak_memory() as peak, pytest.raises(ModelFileError, match="exceed the input limit"):
        load(path)
    assert peak[0] < CHEAP


def test_a_member_larger_than_it_declares_is_cut_off(tmp_path):
    path = tmp_path / "liar.npz"
    raw = deflated_zeros(BIG)  # declares 1,000 bytes, would inflate to 257 MB
    model_with_member(path, "liar.npy", raw, zipfile.ZIP_DEFLATED, size=1000)
    with peak_memory() as peak, pytest.raises(ModelFileError, match="liar.npz: liar: "):
        load(path)
    assert peak[0] < CHEAP


def test_an_npy_header_declaring_huge_arrays_is_refused_before_allocating(tmp_path):
    path = tmp_path / "shape.npz"
    raw = npy_header((2**40,)) + bytes(16)
    model_with_member(path, "huge.npy", raw, crc=zlib.crc32(raw))
    with peak_memory() as peak, pytest.raises(ModelFileError, match="header declares shape"):
        load(path)
    assert peak[0] < CHEAP


@pytest.mark.parametrize(
    "method, message",
    [
        (zipfile.ZIP_BZIP2, "compression method 12"),
        (zipfile.ZIP_LZMA, "compression method 14"),
        (99, "compression method 99"),  # AES, or anything zipfile cannot read
    ],
)
def test_unexpected_compression_is_refused(tmp_path, method, message):
    path = tmp_path / "m.npz"
    model_with_member(path, "x.npy", b"whatever", method)
    with pytest.raises(ModelFileError, match=message):
        load(path)


def test_broken_deflate_streams_and_crcs_are_refused(tmp_path):
    payload = npy_header((5000,)) + bytes(range(256)) * 19 + bytes(136)
    packed = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = packed.compress(payload) + packed.flush()
    crc = zlib.crc32(payload)
    path = tmp_path / "m.npz"
    model_with_member(path, "ok.npy", raw, zipfile.ZIP_DEFLATED, size=len(payload), crc=crc)
    with pytest.raises(ModelFileError, match="checksum mismatch"):  # read, then not signed
        load(path)
    broken = bytearray(raw)
    broken[len(raw) // 2] ^= 0x55
    model_with_member(path, "x.npy", bytes(broken), 8, size=len(payload), crc=crc)
    with pytest.raises(ModelFileError, match="m.npz: x: "):
        load(path)
    model_with_member(path, "y.npy", raw, zipfile.ZIP_DEFLATED, size=len(payload), crc=crc ^ 1)
    with pytest.raises(ModelFileError, match="m.npz: y: corrupt.*CRC"):
        load(path)


def io_path(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_encrypted_and_repeated_entries_and_non_integer_arrays_are_refused(tmp_path):
    path = tmp_path / "m.npz"
    save(path, build_mlp([4, 3]))
    data = bytearray(path.read_bytes())
    central = data.find(b"PK\x01\x02")
    data[central + 8] |= 1  # the encryption flag of the first entry
    with pytest.raises(ModelFileError, match="encrypted"):
        load(io_path(path, bytes(data)))
    buf = io.BytesIO()
    np.savez(buf, meta=np.zeros(3, np.uint8), w=np.ones(3))
    with pytest.raises(ModelFileError, match="w has dtype float64; pocketnn reads integers"):
        load(io_path(path, buf.getvalue()))


# --------------------------------------------------------------------------- idx files


def idx_header(shape, code=0x08) -> bytes:
    return bytes([0, 0, code, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)


def test_a_gzip_idx_declaring_more_than_the_limit_is_refused_before_inflating(tmp_path):
    path = tmp_path / "bomb.idx.gz"
    pack = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = [pack.compress(idx_header((BIG,)))]
    body += [pack.compress(bytes(2**20)) for _ in range(BIG // 2**20)]
    path.write_bytes(b"".join([*body, pack.flush()]))
    with peak_memory() as peak, pytest.raises(DatasetError, match="exceed the input limit"):
        read_idx(path)
    assert peak[0] < CHEAP


def test_a_gzip_idx_holding_more_than_it_declares_is_cut_off(tmp_path):
    path = tmp_path / "liar.idx.gz"
    pack = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = [pack.compress(idx_header((100,)))]
    body += [pack.compress(bytes(2**20)) for _ in range(BIG // 2**20)]
    path.write_bytes(b"".join([*body, pack.flush()]))
    with peak_memory() as peak, pytest.raises(DatasetError, match="trailing bytes"):
        read_idx(path)
    assert peak[0] < CHEAP


def test_the_limit_can_be_lowered_and_raised(tmp_path, capsys):
    path = tmp_path / "x.idx"
    path.write_bytes(idx_header((3000,)) + bytes(3000))
    with input_limit(2000), pytest.raises(DatasetError, match=r"3008 bytes exceed.*2000"):
        read_idx(path)
    with input_limit(4000):
        assert read_idx(path).shape == (3000,)
    model = tmp_path / "m.npz"
    save(model, build_mlp([784, 10]))
    line = cli_line(capsys, "--max-input", "1K", "info", model)
    assert str(model) in line and "--max-input" in line
    assert main(["--max-input", "2M", "info", str(model)]) == 0
    with pytest.raises(ValueError, match="positive"):
        with input_limit(0):
            pass


# --------------------------------------------------------------------------- images


def png(width: int, height: int) -> bytes:
    """A grayscale PNG header declaring ``width`` x ``height`` and a tiny IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(1000)))
        + chunk(b"IEND", b"")
    )


def test_a_png_decompression_bomb_is_refused_before_decoding(tmp_path, capsys):
    path = tmp_path / "bomb.png"
    path.write_bytes(png(30000, 30000))
    with peak_memory() as peak, pytest.raises(CLIError, match="30000x30000 image"):
        read_images(path)
    assert peak[0] < CHEAP
    model = tmp_path / "m.npz"
    save(model, build_mlp([784, 10]))
    assert "bomb.png: a 30000x30000 image" in cli_line(capsys, "predict", model, path)


def test_pgm_sizes_are_checked_before_the_pixels_are_parsed(tmp_path):
    path = tmp_path / "big.pgm"
    path.write_bytes(b"P2\n100000 100000\n255\n" + b"1 " * 1000)
    with pytest.raises(CLIError, match="100000x100000 image"):
        read_images(path)


# --------------------------------------------------------------------------- special files


SPECIAL = ["fifo", "folder", "/dev/zero", "/dev/urandom"]


def special(tmp_path: Path, kind: str) -> Path:
    if kind == "fifo":
        os.mkfifo(tmp_path / "fifo")
        return tmp_path / "fifo"
    if kind == "folder":
        (tmp_path / "folder").mkdir()
        return tmp_path / "folder"
    return Path(kind)


def within(seconds: float, call):
    """``call()`` in a daemon thread; fails (instead of hanging the tests) if it blocks."""
    outcome = []

    def run():
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert outcome, f"still reading after {seconds} s"
    return outcome[0]


@pytest.mark.parametrize("kind", SPECIAL)
def test_streams_and_special_files_are_refused_without_reading(tmp_path, capsys, kind):
    path = special(tmp_path, kind)
    for read, error in ((load, ModelFileError), (read_idx, DatasetError), (read_images, CLIError)):
        outcome = within(10, lambda r=read: r(path))
        assert isinstance(outcome, error), outcome
        assert str(path) in str(outcome) and "regular file" in str(outcome), outcome
    model = tmp_path / "m.npz"
    save(model, build_mlp([784, 10]))
    for argv in (["info", path], ["predict", model, path]):
        line = within(10, lambda a=argv: cli_line(capsys, *a))
        assert str(path) in line and "regular file" in line, line


# --------------------------------------------------------------------------- one line each


def test_memory_errors_give_a_message(tmp_path, capsys, monkeypatch):
    model = tmp_path / "m.npz"
    save(model, build_mlp([784, 10]))
    image = tmp_path / "x.pgm"
    image.write_bytes(b"P5\n28 28\n255\n" + bytes(784))

    def exhausted(self, x, batch_size=500):
        raise MemoryError

    monkeypatch.setattr(pocketnn.Sequential, "scores", exhausted)
    line = cli_line(capsys, "predict", model, image)
    assert line == f"pocketnn: error: {model} on {image}: out of memory"

    def no_memory(size):
        raise MemoryError

    monkeypatch.setattr("pocketnn.io.files.bytearray", no_memory, raising=False)
    with pytest.raises(DatasetError, match=f"{image}: out of memory for 797 bytes"):
        read_idx(image)


def test_a_model_that_does_not_fit_the_data_is_one_line(tmp_path, capsys, mnist):
    seven = tmp_path / "seven.npz"
    save(seven, build_mlp([784, 20, 7]))
    line = cli_line(capsys, "evaluate", seven, "--dataset", "mnist")
    assert f"{seven}: the model has 7 classes, mnist has 10" in line
    small = tmp_path / "small.npz"
    save(small, build_mlp([100, 10]))
    image = tmp_path / "x.pgm"
    image.write_bytes(b"P5\n28 28\n255\n" + bytes(784))
    line = cli_line(capsys, "evaluate", small, "--dataset", "mnist")
    assert f"{small}: mnist: samples of shape (784,) do not fit the model's input" in line
    line = cli_line(capsys, "predict", small, image)  # a 100-input model reads .npz/.csv/.png
    assert f"{image}: give an .npz, a .csv or a .png file to this model" in line


def test_an_overflow_while_predicting_names_the_model_and_the_file(tmp_path, capsys):
    model = build_mlp([784, 10], weight_clamp=2**31 - 1)
    model.layers[0].set_params(np.full((784, 10), 2**30), np.zeros(10, dtype=np.int64))
    path = tmp_path / "m.npz"
    save(path, model)
    image = tmp_path / "x.pgm"
    image.write_bytes(b"P5\n28 28\n255\n" + bytes([255]) * 784)
    line = cli_line(capsys, "predict", path, image)
    assert f"{path} on {image}: fc1: forward a @ W + b: value" in line


def test_a_dataset_that_cannot_be_found_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("pocketnn.datasets.load.SOURCES", ("dir", "cache"))
    monkeypatch.setenv("POCKETNN_DATA", str(tmp_path / "empty-cache"))
    model = tmp_path / "m.npz"
    save(model, build_mlp([784, 10]))
    line = cli_line(capsys, "evaluate", model, "--dataset", "mnist", "--data-dir", tmp_path)
    assert "could not obtain mnist; sources tried:" in line and "--data-dir" in line


# ------------------------------------------------- what the long fuzz runs found, kept


def test_empty_arrays_with_huge_sides_are_refused(tmp_path):
    """numpy sizes even an empty array in int64: sides of 2**40 overflow it."""
    path = tmp_path / "x.idx"
    path.write_bytes(bytes([0, 0, 8, 0x34]) + b"\x03\x00\x00\x00" * 4 + bytes(4 * 48))
    with pytest.raises(DatasetError, match="52 dimensions"):
        read_idx(path)
    raw = npy_header((2**40, 2**40, 0), "<i2")
    model_with_member(path, "empty.npy", raw, crc=zlib.crc32(raw))
    with pytest.raises(ModelFileError, match="invalid shape"):
        load(path)


def test_a_png_pillow_cannot_decode_is_one_line(tmp_path, capsys):
    path = tmp_path / "broken.png"
    good = png(28, 28)
    path.write_bytes(good[:41] + b"B\x85\xa4>" + good[45:])  # a broken chunk after IHDR
    with pytest.raises(CLIError, match="broken.png: not a readable PNG"):
        read_images(path)
    model = tmp_path / "m.npz"
    save(model, build_mlp([784, 10]))
    assert "broken.png: not a readable PNG" in cli_line(capsys, "predict", model, path)


# ------------------------------------------------------------- a user's own data (--data)


def test_a_users_data_files_are_read_within_bounds(tmp_path):
    from pocketnn.datasets import load_user_data

    os.mkfifo(tmp_path / "fifo.csv")
    os.mkfifo(tmp_path / "fifo.npz")
    for name in ("fifo.csv", "fifo.npz"):
        outcome = within(10, lambda n=name: load_user_data(tmp_path / n))
        assert isinstance(outcome, DatasetError) and "FIFO" in str(outcome), outcome
    folder = tmp_path / "pets"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        (folder / label / "a.png").write_bytes(png(30000, 30000))
    with peak_memory() as peak, pytest.raises(DatasetError, match=r"a.png: .*30000x30000"):
        load_user_data(folder)
    assert peak[0] < CHEAP
    big = tmp_path / "big.csv"
    big.write_text("label,a,b\n" + "1,2,3\n" * 400)
    with input_limit(1000), pytest.raises(DatasetError, match="big.csv: 2410 bytes exceed"):
        load_user_data(big)
    npz = tmp_path / "bomb.npz"
    model_with_member(npz, "x_train.npy", deflated_zeros(BIG), zipfile.ZIP_DEFLATED, size=BIG)
    with peak_memory() as peak, pytest.raises(DatasetError, match="exceed the input limit"):
        load_user_data(npz)
    assert peak[0] < CHEAP
