"""A user's own data: .npz, CSV and image folders, every malformed case refused in one line,
and scikit-learn's digits end to end: train, evaluate, export to C, run the C."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_export_c import compile_host, host_predict, host_train

from pocketnn import Trainer
from pocketnn.cli import main
from pocketnn.cli.logs import read_log
from pocketnn.core.overflow import IntegerOverflowError
from pocketnn.datasets import DatasetError, load_user_data
from pocketnn.export import export_c, generate_c
from pocketnn.io.model_file import load_model_file
from pocketnn.nn.inputs import InputSpec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def small_arrays(rng, shape=(6,), dtype=np.int16, n=(60, 20), classes=3):
    return {
        "x_train": rng.integers(-300, 300, (n[0], *shape)).astype(dtype),
        "y_train": rng.integers(0, classes, n[0]).astype(np.int64),
        "x_test": rng.integers(-300, 300, (n[1], *shape)).astype(dtype),
        "y_test": rng.integers(0, classes, n[1]).astype(np.int64),
    }


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """scikit-learn's bundled digits (8x8 images, values 0..16), through the README's script."""
    pytest.importorskip("sklearn")
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    subprocess.run([sys.executable, EXAMPLES / "digits_npz.py", path], check=True)
    return path


# ------------------------------------------------------------------ reading


@pytest.mark.parametrize(
    "dtype, values, expected",
    [
        (np.uint8, (0, 255), "uint8"),
        (np.int8, (-5, 5), "int8"),
        (np.int16, (0, 10), "int16"),  # the file's own type, even if the values are small
        (np.int64, (0, 16), "uint8"),  # a wide type: the smallest one holding the values
        (np.int32, (-129, 5), "int16"),
    ],
)
def test_npz_input_type(tmp_path, dtype, values, expected):
    x = np.array([[values[0], values[1]], [values[1], values[0]]], dtype=dtype)
    y = np.array([0, 1])
    path = write_npz(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    data = load_user_data(path)
    assert data.input_spec == InputSpec(expected, (2,))
    assert data.train_images.dtype == np.dtype(expected)
    assert data.classes == ("0", "1")


@pytest.mark.parametrize("shape", [(6,), (4, 5), (3, 4, 5)])
def test_npz_keeps_sample_shape(tmp_path, shape):
    rng = np.random.default_rng(0)
    arrays = small_arrays(rng, shape)
    data = load_user_data(write_npz(tmp_path / "d.npz", **arrays))
    assert data.input_spec.shape == shape
    np.testing.assert_array_equal(data.train_images, arrays["x_train"])
    np.testing.assert_array_equal(data.test_labels, arrays["y_test"])


def npz_case(name):
    rng = np.random.default_rng(1)
    a = small_arrays(rng)
    if name == "float":
        a["x_train"] = a["x_train"].astype(np.float32)
    elif name == "missing":
        del a["y_test"]
    elif name == "lengths":
        a["y_train"] = a["y_train"][:-1]
    elif name == "shapes":
        a["x_test"] = a["x_test"][:, :5]
    elif name == "label_range":
        a["y_test"][0] = 7
    elif name == "negative_label":
        a["y_train"][3] = -1
    elif name == "int16":
        a["x_train"] = a["x_train"].astype(np.int32) * 200
    elif name == "ndim":
        a["x_train"] = a["x_train"][:, :, None, None, None]
    elif name == "labels_2d":
        a["y_train"] = a["y_train"][:, None]
    elif name == "pickled":
        a["x_train"] = np.array([[1, 2], [3]], dtype=object)
    return a


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("float", "x_train has dtype float32"),
        ("missing", "missing array(s) y_test"),
        ("lengths", "x_train has 60 samples but y_train 59"),
        ("shapes", "training samples have shape (6,) but test samples (5,)"),
        ("label_range", "test label 7 is out of range"),
        ("negative_label", "label -1 is negative"),
        ("int16", "beyond int16"),
        ("ndim", "samples must be vectors"),
        ("labels_2d", "labels must be (N,)"),
        ("pickled", "not a readable .npz"),
    ],
)
def test_malformed_npz_is_one_line_error(capsys, tmp_path, case, fragment):
    path = tmp_path / "bad.npz"
    np.savez(path, **npz_case(case))
    with pytest.raises(DatasetError) as info:
        load_user_data(path)
    assert fragment in str(info.value) and str(path) in str(info.value)
    code, out, err = run(capsys, "train", "--data", path, "--out", tmp_path / "m.npz")
    assert code == 2 and err.count("\n") == 1 and fragment in err and str(path) in err
    assert not (tmp_path / "m.npz").exists()


def test_csv_with_named_labels_and_seeded_split(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(-1000, 1000, (50, 3))
    names = np.array(["walk", "run", "sit"])[rng.integers(0, 3, 50)]
    lines = ["ax, ay,activity,az"] + [
        f"{a},{b},{n},{c}" for (a, b, c), n in zip(x.tolist(), names.tolist())
    ]
    path = tmp_path / "motion.csv"
    path.write_text("\n".join(lines) + "\n\n")
    data = load_user_data(path, label_column="activity", test_percent=20)
    assert data.classes == ("run", "sit", "walk")
    assert data.input_spec == InputSpec("int16", (3,))
    assert len(data.test_labels) == 10 and len(data.train_labels) == 40
    both = np.concatenate([data.train_images, data.test_images])
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, x.tolist()))
    again = load_user_data(path, label_column="activity", test_percent=20)
    np.testing.assert_array_equal(again.test_images, data.test_images)
    other = load_user_data(path, label_column="activity", test_percent=20, split_seed=1)
    assert not np.array_equal(other.test_images, data.test_images)
    row = x[0].tolist()
    i = next(k for k, t in enumerate(both.tolist()) if t == row)
    label = (np.concatenate([data.train_labels, data.test_labels]))[i]
    assert data.classes[label] == names[0]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("a,b,label\n1,2,0\n3,4\n", "line 3 has 2 fields, the header has 3"),
        ("a,b,label\n1,2.5,0\n3,4,1\n", "line 2, column 'b': '2.5' is not an integer"),
        ("a,b,class\n1,2,0\n3,4,1\n", "no label column 'label'"),
        ("a,b,label\n1,2,0\n3,4,-1\n", "label -1 is negative"),
        ("a,b,label\n1,99999,0\n3,4,1\n", "beyond int16"),
        ("", "empty file"),
        ("a,b,label\n", "no sample rows"),
    ],
)
def test_malformed_csv_is_one_line_error(capsys, tmp_path, text, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    code, _, err = run(capsys, "train", "--data", path, "--out", tmp_path / "m.npz")
    assert code == 2 and err.count("\n") == 1, err
    assert fragment in err and str(path) in err


def write_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = array if array.ndim == 2 else array.transpose(1, 2, 0)
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(path)


def image_folder(root, rng, classes=("cat", "dog"), per_class=5, shape=(6, 5)):
    images = {}
    for c in classes:
        for i in range(per_class):
            images[(c, i)] = rng.integers(0, 256, shape).astype(np.uint8)
            write_png(root / c / f"{i:02d}.png", images[(c, i)])
    return images


def test_image_folder_split_per_class(tmp_path):
    rng = np.random.default_rng(3)
    images = image_folder(tmp_path / "pets", rng, per_class=10)
    data = load_user_data(tmp_path / "pets", test_percent=30)
    assert data.classes == ("cat", "dog")
    assert data.input_spec == InputSpec("uint8", (6, 5))
    assert np.bincount(data.test_labels).tolist() == [3, 3]  # 30 % of each class
    assert np.bincount(data.train_labels).tolist() == [7, 7]
    seen = {(int(y), x.tobytes()) for x, y in zip(data.train_images, data.train_labels)}
    seen |= {(int(y), x.tobytes()) for x, y in zip(data.test_images, data.test_labels)}
    assert seen == {(["cat", "dog"].index(c), a.tobytes()) for (c, _), a in images.items()}


def test_image_folder_with_test_folder_and_rgb(tmp_path):
    rng = np.random.default_rng(4)
    image_folder(tmp_path / "d" / "train", rng, classes=("a", "b", "c"), shape=(3, 4, 4))
    image_folder(tmp_path / "d" / "test", rng, classes=("a", "c"), per_class=2, shape=(3, 4, 4))
    data = load_user_data(tmp_path / "d")
    assert data.input_spec == InputSpec("uint8", (3, 4, 4))
    assert len(data.train_labels) == 15
    assert data.test_labels.tolist() == [0, 0, 2, 2]


@pytest.mark.parametrize("case", ["empty_class", "sizes", "mixed", "one_class", "not_png"])
def test_malformed_image_folder_is_one_line_error(capsys, tmp_path, case):
    rng = np.random.default_rng(5)
    root = tmp_path / "imgs"
    image_folder(root, rng)
    if case == "empty_class":
        (root / "empty").mkdir()
        fragment, where = "class folder with no PNG image", root / "empty"
    elif case == "sizes":
        write_png(root / "dog" / "big.png", np.zeros((7, 5)))
        fragment, where = "5x7 grayscale where", root / "dog" / "big.png"
    elif case == "mixed":
        write_png(root / "dog" / "colour.png", np.zeros((3, 6, 5)))
        fragment, where = "5x6 RGB where", root / "dog" / "colour.png"
    elif case == "one_class":
        root = tmp_path / "single"
        image_folder(root, rng, classes=("only",))
        fragment, where = "found 1 class folder", root
    else:
        (root / "cat" / "fake.png").write_bytes(b"GIF89a not a png")
        fragment, where = "not a readable PNG", root / "cat" / "fake.png"
    code, _, err = run(capsys, "train", "--data", root, "--out", tmp_path / "m.npz")
    assert code == 2 and err.count("\n") == 1, err
    assert fragment in err and str(where) in err


def test_validation_holdout_is_seeded_and_kept_apart(capsys, tmp_path):
    rng = np.random.default_rng(6)
    path = write_npz(tmp_path / "d.npz", **small_arrays(rng, n=(80, 20)))
    code, _, err = run(
        capsys, "train", "--data", path, "--val", 15, "--epochs", 2, "--out", tmp_path / "a.npz"
    )
    assert code == 0, err
    log = read_log(tmp_path / "a.log.jsonl")
    assert [(r["train_total"], r["val_total"], r["test_total"]) for r in log] == [(65, 15, 20)] * 2
    assert all(r["val_correct"] is not None and r["val_loss"] >= 0 for r in log)
    code, _, err = run(
        capsys, "train", "--resume", "--data", path, "--val", 10, "--out", tmp_path / "a.npz"
    )
    assert code == 2 and "--val 10 (saved: 15)" in err


# ------------------------------------------------------------------ end to end


@pytest.mark.gcc
def test_int16_sensor_model_exports_and_runs_int16_inputs(tmp_path):
    rng = np.random.default_rng(7)
    arrays = small_arrays(rng, shape=(2, 3))
    path = write_npz(tmp_path / "sensor.npz", **arrays)
    assert main(["train", "--data", str(path), "--epochs", "1", "--quiet", "--out",
                 str(tmp_path / "s.npz")]) == 0  # fmt: skip
    saved = load_model_file(tmp_path / "s.npz")
    assert saved.input_spec == InputSpec("int16", (2, 3))
    assert saved.model.input_shape == (6,)  # an MLP: the samples are flattened
    header = generate_c(tmp_path / "s.npz", name="sensor")["sensor.h"]
    assert "typedef int16_t sensor_input_t;" in header
    assert "#define SENSOR_INPUT_MIN (-32768)" in header and "uint8_t input" not in header
    export_c(tmp_path / "s.npz", tmp_path / "c", name="sensor")
    exe = compile_host(tmp_path / "c" / "sensor.c", tmp_path / "c", name="sensor")
    x = np.concatenate(
        [arrays["x_test"].reshape(20, 6), np.full((1, 6), -32768), np.full((1, 6), 32767)]
    ).astype(np.int16)
    scores, classes = host_predict(exe, x, 3, "int16")
    for row, got, cls in zip(x, scores, classes):  # the extremes may overflow: same verdict
        try:
            expected = saved.model.scores(row[None])[0]
        except IntegerOverflowError:
            assert cls == -1  # NAME_ERR_OVERFLOW
        else:
            np.testing.assert_array_equal(got, expected)
            assert cls == int(np.argmax(expected))
    # on-device training takes int16 samples too: two DFA steps, every weight as in Python
    export_c(tmp_path / "s.npz", tmp_path / "t", name="sensor", with_training=True)
    exe = compile_host(tmp_path / "t" / "sensor.c", tmp_path / "t", "sensor", with_training=True)
    x, y = arrays["x_train"].reshape(60, 6), arrays["y_train"]
    steps = [(x[:20], y[:20], 1000), (x[20:40], y[20:40], 700)]
    results, params = host_train(exe, saved.model, steps, "int16")
    trainer = Trainer.load(tmp_path / "s.npz")
    expected = [trainer.step(xs, ys, lr_inv=lr)[1] for xs, ys, lr in steps]
    assert results == expected
    for got, layer in zip(params[::2], trainer.model.layers):
        np.testing.assert_array_equal(got, layer.W)


@pytest.mark.gcc
def test_digits_end_to_end_train_evaluate_export_run_c(capsys, tmp_path, digits):
    model_path = tmp_path / "digits-model.npz"
    code, out, err = run(
        capsys, "train", "--data", digits, "--val", 200, "--epochs", 10, "--out", model_path
    )
    assert code == 0, err
    trained = out.splitlines()[-3]
    code, out, err = run(capsys, "evaluate", model_path, "--data", digits)
    assert code == 0, err
    correct = int(out.split("(")[1].split("/")[0])
    assert f"({correct}/359)" in trained  # the evaluation sees the test set training saw
    assert correct > 0.85 * 359  # a real model: the all-zero one gets about 10 %
    code, _, err = run(capsys, "export-c", model_path, "--out", tmp_path / "c", "--name", "digits")
    assert code == 0, err
    exe = compile_host(tmp_path / "c" / "digits.c", tmp_path / "c", name="digits")
    saved = load_model_file(model_path)
    with np.load(digits) as npz:
        x_test, y_test = npz["x_test"], npz["y_test"]
    x = x_test.reshape(len(x_test), -1)
    scores, classes = host_predict(exe, x, 10, saved.input_spec.dtype)
    np.testing.assert_array_equal(scores, saved.model.scores(x))
    assert int((classes == y_test).sum()) == correct


def test_predict_reads_the_models_own_kind_of_samples(capsys, tmp_path):
    rng = np.random.default_rng(8)
    images = image_folder(tmp_path / "pets", rng, shape=(3, 4, 4), per_class=6)
    model_path = tmp_path / "pets.npz"
    argv = ["train", "--data", tmp_path / "pets", "--epochs", 2, "--out", model_path]
    assert run(capsys, *argv)[0] == 0
    saved = load_model_file(model_path)
    expected = saved.model.predict(images[("dog", 0)].reshape(1, -1))[0]
    code, out, err = run(capsys, "predict", model_path, tmp_path / "pets" / "dog" / "00.png")
    assert code == 0, err
    assert out.strip() == f"{tmp_path / 'pets' / 'dog' / '00.png'}: {expected} " + (
        f"({['cat', 'dog'][expected]})"
    )
    x = np.stack([images[("cat", i)] for i in range(3)])
    np.savez(tmp_path / "batch.npz", x=x)
    code, out, _ = run(capsys, "predict", model_path, tmp_path / "batch.npz")
    got = [int(line.split(": ")[1].split()[0]) for line in out.splitlines()]
    assert code == 0 and got == saved.model.predict(x.reshape(3, -1)).tolist()
    np.savez(tmp_path / "wrong.npz", x=x[:, :2])
    code, _, err = run(capsys, "predict", model_path, tmp_path / "wrong.npz")
    assert code == 2 and "samples of shape (2, 4, 4), but the model takes (3, 4, 4)" in err


def test_resume_on_own_data_reaches_the_same_bits(capsys, tmp_path):
    rng = np.random.default_rng(9)
    x = rng.integers(-50, 51, (120, 4))
    lines = ["a,b,c,d,kind"] + [f"{','.join(map(str, r))},{'ab'[int(r[0] > 0)]}" for r in x]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    common = ["--data", tmp_path / "d.csv", "--label-column", "kind", "--test-percent", 25]
    common += ["--split-seed", 4, "--val", 10, "--seed", 3]
    assert run(capsys, "train", *common, "--epochs", 4, "--out", tmp_path / "straight.npz")[0] == 0
    assert run(capsys, "train", *common, "--epochs", 2, "--out", tmp_path / "r.npz")[0] == 0
    resumed = ["--data", tmp_path / "d.csv", "--epochs", 4, "--resume", "--out", tmp_path / "r.npz"]
    code, _, err = run(capsys, "train", *resumed)  # the split settings come from the file
    assert code == 0, err
    a, b = load_model_file(tmp_path / "straight.npz"), load_model_file(tmp_path / "r.npz")
    for la, lb in zip(a.model.layers, b.model.layers):
        np.testing.assert_array_equal(la.W, lb.W)
    assert (
        read_log(tmp_path / "straight.log.jsonl")[-1]["val_correct"]
        == (read_log(tmp_path / "r.log.jsonl")[-1]["val_correct"])
    )
    assert b.training["classes"] == ["a", "b"] and b.training["test_percent"] == 25
