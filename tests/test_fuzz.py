"""Fuzzing the readers: mutated real files either load or are refused with pocketnn's error.

Hypothesis drives the model loader, the idx reader and the image reader with real files
(a checkpoint of a model trained on MNIST, the previous release's files, MNIST images as
idx, gzip, PNG and PGM) mutated byte by byte, with a bias towards the bytes that declare
something (zip headers and central directory, npy headers, idx headers, PNG's IHDR). A
second model fuzzer edits the metadata and arrays *and signs them again*, since the
checksum is not keyed: it reaches the code behind the checksum as a deliberate editor would.
Every input must load or raise :class:`pocketnn.errors.PocketnnError`, and the command
line must answer it with exit status 0, or 2 and one line naming the file.

CI runs a fixed set of cases (``derandomize``) in bounded time; set
``POCKETNN_FUZZ_EXAMPLES`` to run more, with fresh random cases (docs/reliability.md gives
the figures of a long run).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pocketnn import Trainer, build_mlp, load_checkpoint, save
from pocketnn.cli import main
from pocketnn.cli.images import read_images
from pocketnn.datasets import read_idx
from pocketnn.errors import PocketnnError
from pocketnn.io.model_file import digest
from pocketnn.io.npz import read_npz

DATA = Path(__file__).parent / "data"
LONG = int(os.environ.get("POCKETNN_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=LONG or 300,
    deadline=None,
    derandomize=not LONG,
    database=None,
    suppress_health_check=list(HealthCheck),
)
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


# --------------------------------------------------------------------------- seeds


def zip_hot_spots(data: bytes) -> list[int]:
    """Offsets of the fields a zip archive and its npy members declare things in."""
    spots = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            local = info.header_offset
            name_len = int.from_bytes(data[local + 26 : local + 28], "little")
            extra_len = int.from_bytes(data[local + 28 : local + 30], "little")
            start = local + 30 + name_len + extra_len
            spots += [local + 8, local + 14, local + 18, local + 22, local + 26]
            spots += range(start, start + 120, 3)  # the npy magic, version and header
    for magic, fields in (
        (b"PK\x01\x02", (10, 16, 20, 24, 28, 42)),
        (b"PK\x05\x06", (8, 10, 12, 16)),
    ):
        at = data.find(magic)
        while at >= 0:
            spots += [at + f for f in fields]
            at = data.find(magic, at + 1)
    return [s for s in spots if s < len(data)]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, mnist):
    """The real files mutated: ``{kind: [(bytes, hot spots), ...]}``."""
    folder = tmp_path_factory.mktemp("seeds")
    model = build_mlp([784, 12, 10])
    trainer = Trainer(model, seed=4)
    trainer.fit(mnist.train_images[:400], mnist.train_labels[:400], 1)
    trainer.save(folder / "checkpoint.npz")
    checkpoint = (folder / "checkpoint.npz").read_bytes()
    deflated = io.BytesIO()  # the same arrays, deflated: the other method model files may use
    np.savez_compressed(deflated, **read_npz(folder / "checkpoint.npz", ValueError))
    models = [checkpoint, deflated.getvalue()]
    models += [(DATA / name).read_bytes() for name in ("format2_plain.npz", "format2_dfa.npz")]

    images = mnist.test_images[:6].reshape(6, 28, 28)
    idx = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (6, 28, 28))
    idx += images.tobytes()
    labels = bytes([0, 0, 8, 1, 0, 0, 0, 6]) + mnist.test_labels[:6].tobytes()
    idx_files = [idx, labels, gzip.compress(idx), gzip.compress(labels)]

    png = folder / "digit.png"
    try:
        from PIL import Image

        Image.fromarray(images[0]).save(png)
        pngs = [png.read_bytes()]
    except ImportError:  # pragma: no cover - Pillow is a test dependency
        pngs = []
    pgm5 = b"P5\n28 28\n255\n" + images[1].tobytes()
    pgm2 = b"P2\n# a comment\n28 28\n255\n" + " ".join(map(str, images[2].ravel())).encode()
    user = io.BytesIO()
    x = mnist.train_images[:12].reshape(12, 28, 28)[:, ::4, ::4]
    np.savez(user, x_train=x[:8], y_train=mnist.train_labels[:8], x_test=x[8:],
             y_test=mnist.train_labels[8:12])  # fmt: skip
    rows = [",".join(map(str, [int(lab), *img.ravel()[:6]])) for img, lab in zip(x, range(12))]
    csv = ("label,a,b,c,d,e,f\n" + "\n".join(rows) + "\n").encode()
    return {
        "user": [(user.getvalue(), zip_hot_spots(user.getvalue())), (csv, list(range(0, 80, 2)))],
        "model": [(m, zip_hot_spots(m)) for m in models],
        "idx": [(d, list(range(16))) for d in idx_files],
        "image": [(d, list(range(40))) for d in [*pngs, pgm5, pgm2, idx]],
    }


@st.composite
def mutated(draw, candidates):
    """One of ``candidates`` with one to five byte-level mutations, often at a hot spot."""
    data, hot = draw(st.sampled_from(candidates))
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 5))):
        where = st.integers(0, max(len(data) - 1, 0))
        if hot:
            where = st.sampled_from(hot) | where
        pos = min(draw(where), max(len(data) - 1, 0))
        op = draw(st.sampled_from(["flip", "byte", "int", "insert", "delete", "cut", "repeat"]))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "int":
            value = draw(st.sampled_from(INTERESTING) | st.integers(0, 2**32 - 1))
            order = draw(st.sampled_from(["little", "big"]))
            data[pos : pos + 4] = value.to_bytes(4, order)
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "cut":
            del data[pos:]
        elif op == "repeat":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 256))]
    return bytes(data)


# --------------------------------------------------------------------------- the contract


def loads_or_refuses(read, path: Path):
    """``read(path)``, or None when it raises pocketnn's own error; anything else fails."""
    try:
        return read(path)
    except PocketnnError as exc:
        assert str(exc).strip(), f"empty message from {type(exc).__name__}"
        return None


def one_line_or_success(argv: list[str], path: Path) -> None:
    """The CLI answers with status 0, or status 2 and one error line that names ``path``
    (after progress lines such as ``resuming ...``, if any)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    lines = err.getvalue().splitlines()
    assert "Traceback" not in err.getvalue(), lines
    if code == 0:
        return
    assert code == 2, (code, lines)
    errors = [line for line in lines if line.startswith("pocketnn: error: ")]
    assert errors == lines[-1:], lines
    assert str(path) in errors[0], errors[0]
    assert "internal error" not in errors[0], errors[0]


def check_model(path: Path) -> None:
    loaded = loads_or_refuses(load_checkpoint, path)
    if loaded is not None:  # a model that loads can run, or refuses with an overflow error
        model = loaded[0]
        x = np.full((3, *model.input_shape), 200, dtype=np.uint8)
        loads_or_refuses(lambda _: model.predict(x), path)
    one_line_or_success(["info", str(path)], path)


@pytest.fixture(scope="module")
def case_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "case"


def test_mutated_model_files(seeds, case_file):
    cases: list[int] = []  # the cases run, for the figures

    @FUZZ
    @given(mutated(seeds["model"]))
    def run(data):
        cases.append(1)
        case_file.write_bytes(data)
        check_model(case_file)

    run()
    print(f"{len(cases)} cases, each loaded or refused with pocketnn's error")


def test_mutated_idx_files(seeds, case_file):
    cases: list[int] = []  # the cases run, for the figures

    @FUZZ
    @given(mutated(seeds["idx"]))
    def run(data):
        cases.append(1)
        case_file.write_bytes(data)
        array = loads_or_refuses(read_idx, case_file)
        assert array is None or array.dtype.kind in "iu"

    run()
    print(f"{len(cases)} cases, each loaded or refused with pocketnn's error")


def test_mutated_user_data(seeds, case_file):
    """A user's ``--data`` file: an .npz of arrays or a CSV."""
    from pocketnn.datasets import load_user_data

    npz, csv = case_file.with_suffix(".npz"), case_file.with_suffix(".csv")
    cases: list[int] = []  # the cases run, for the figures

    @FUZZ
    @given(mutated(seeds["user"][:1]), mutated(seeds["user"][1:]))
    def run(npz_data, csv_data):
        cases.append(1)
        for path, data in ((npz, npz_data), (csv, csv_data)):
            path.write_bytes(data)
            loaded = loads_or_refuses(load_user_data, path)
            assert loaded is None or loaded.train_images.dtype.kind in "iu"

    run()
    print(f"{len(cases)} cases, each loaded or refused with pocketnn's error")


def test_mutated_images(seeds, case_file, tmp_path_factory):
    model_file = tmp_path_factory.mktemp("model") / "m.npz"
    save(model_file, build_mlp([784, 10]))

    cases: list[int] = []  # the cases run, for the figures

    @FUZZ
    @given(mutated(seeds["image"]))
    def run(data):
        cases.append(1)
        case_file.write_bytes(data)
        images = loads_or_refuses(read_images, case_file)
        assert images is None or (images.dtype == np.uint8 and images.shape[1:] == (784,))
        one_line_or_success(["predict", str(model_file), str(case_file)], case_file)

    run()
    print(f"{len(cases)} cases, each loaded or refused with pocketnn's error")


# ------------------------------------------------------------ deliberate, re-signed edits

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def edited(draw, original: dict):
    """The metadata with one node replaced by any JSON value (keys of the real file are
    favoured), and maybe an array replaced by another of random dtype and shape."""
    meta = json.loads(json.dumps(original))
    node, keys = meta, []
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        keys.append(key)
        node = node[key]
    value = draw(JSON | st.integers(-2, 2**40) | st.sampled_from(["Dense", "pocket_tanh", "dfa"]))
    if keys:
        target = meta
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return meta


def test_edited_and_resigned_model_files(seeds, case_file):
    seed_file = case_file.with_name("seed.npz")
    seed_file.write_bytes(seeds["model"][0][0])
    arrays = read_npz(seed_file, ValueError)
    meta = json.loads(arrays.pop("meta").tobytes())
    meta.pop("sha256")

    cases: list[int] = []  # the cases run, for the figures

    @FUZZ
    @given(
        edited(meta),
        st.sampled_from([None, *sorted(arrays)]),
        st.sampled_from(["int8", "int16", "int32", "int64", "uint8", "uint64"]),
        st.lists(st.integers(0, 40), min_size=0, max_size=3),
    )
    def run(new_meta, array_name, dtype, shape):
        cases.append(1)
        new_arrays = dict(arrays)
        if array_name is not None:
            rng = np.random.default_rng(len(shape))
            info = np.iinfo(dtype)
            new_arrays[array_name] = rng.integers(info.min, info.max, shape, dtype=dtype)
        signed = new_meta if isinstance(new_meta, dict) else {"value": new_meta}
        signed = dict(signed, sha256=digest(new_arrays, signed))
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(signed).encode(), np.uint8), **new_arrays)
        case_file.write_bytes(buf.getvalue())
        check_model(case_file)

    run()
    print(f"{len(cases)} cases, each loaded or refused with pocketnn's error")


def test_edited_checkpoints_resume_or_refuse(seeds, case_file, mnist, monkeypatch):
    """``train --resume`` of a re-signed edited checkpoint trains, or refuses in one line."""
    seed_file = case_file.with_name("resume-seed.npz")
    seed_file.write_bytes(seeds["model"][0][0])
    arrays = read_npz(seed_file, ValueError)
    meta = json.loads(arrays.pop("meta").tobytes())
    meta.pop("sha256")
    meta["training"].update(dataset="mnist", epochs=2, preset="paper")
    small = type(mnist)(
        "mnist", mnist.train_images[:60], mnist.train_labels[:60], mnist.test_images[:20],
        mnist.test_labels[:20], mnist.classes,
    )  # fmt: skip
    monkeypatch.setattr("pocketnn.cli.data.load_dataset", lambda *a, **k: small)
    out = case_file.with_name("resumed.npz")

    cases: list[int] = []  # the cases run, for the figures

    @settings(FUZZ, max_examples=max(LONG // 10, 60))
    @given(edited({"training": meta["training"]}))
    def run(edit):
        cases.append(1)
        signed = dict(meta, training=edit.get("training"))
        signed["sha256"] = digest(arrays, signed)
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(signed).encode(), np.uint8), **arrays)
        out.write_bytes(buf.getvalue())
        out.with_name("resumed.log.jsonl").unlink(missing_ok=True)
        # --epochs: an edited epoch count may rightly ask for a run without end
        argv = ["train", "--dataset", "mnist", "--resume", "--epochs", "2", "--out", str(out)]
        one_line_or_success(argv, out)

    run()
    print(f"{len(cases)} cases, each loaded or refused with pocketnn's error")
