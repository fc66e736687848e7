import json

import numpy as np
import pytest

from pocketnn import Trainer, build_mlp, load, load_checkpoint, save
from pocketnn.cli import main
from pocketnn.cli.report import confusion_matrix


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, mnist):
    model = build_mlp([784, 40, 10])
    trainer = Trainer(model, seed=2)
    trainer.fit(mnist.train_images[:6000], mnist.train_labels[:6000], 1)
    state, arrays = trainer.state()
    state["dataset"] = "mnist"
    path = tmp_path_factory.mktemp("models") / "small.npz"
    save(path, model, training=state, extra_arrays=arrays)
    return path


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--dataset", "cifar", "--out", "m.npz"], "invalid choice"),
        (["train", "--dataset", "mnist", "--arch", "784-x-10", "--out", "m.npz"], "--arch"),
        (["train", "--dataset", "mnist", "--arch", "784-100-9", "--out", "m.npz"], "end at 10"),
        (["train", "--dataset", "mnist", "--batch-size", "0", "--out", "m.npz"], "batch_size"),
        (["train", "--dataset", "mnist", "--lr-inv", "-5", "--out", "m.npz"], "lr_inv"),
        (["train", "--dataset", "mnist", "--epochs", "-1", "--out", "m.npz"], "epochs"),
        (["train", "--dataset", "mnist", "--activation", "tanh", "--out", "m.npz"], "activation"),
        (["train", "--dataset", "mnist", "--out", "/nonexistent/dir/m.npz"], "does not exist"),
        (["train", "--dataset", "mnist", "--epochs", "2x", "--out", "m.npz"], "invalid int"),
        (["info", "/nonexistent/model.npz"], "no such model file"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_errors(capsys, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("pocketnn: error:") and fragment in lines[-1], err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("*.npz"))


def test_corrupt_model_file_is_one_line_error(capsys, tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"PK\x03\x04 garbage")
    for cmd in (
        ["info", str(path)],
        ["evaluate", str(path), "--dataset", "mnist"],
        ["predict", str(path), str(path)],
    ):
        code, _, err = run(capsys, *cmd)
        assert code == 2 and err.count("\n") == 1 and "bad.npz" in err


def test_info_shows_architecture_and_ranges(capsys, model_file):
    code, out, _ = run(capsys, "info", str(model_file))
    assert code == 0
    assert "architecture: 784-40-10" in out
    assert f"parameters: {784 * 40 + 40 + 40 * 10 + 10}" in out
    model = load(model_file)
    w = model.layers[0].W
    assert f"[{w.min()}, {w.max()}]" in out


def test_evaluate_prints_accuracy_and_confusion_matrix(capsys, model_file, mnist):
    code, out, _ = run(capsys, "evaluate", str(model_file), "--dataset", "mnist")
    assert code == 0
    correct = load(model_file).count_correct(mnist.test_images, mnist.test_labels)
    assert f"({correct}/10000)" in out
    rows = [line.split() for line in out.splitlines()[3:13]]
    matrix = np.array([[int(v) for v in row[1:]] for row in rows])
    assert matrix.sum() == 10000 and np.trace(matrix) == correct


def test_confusion_matrix_counts():
    cm = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 2, 1, 2]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


def write_pgm(path, image, binary=True):
    if binary:
        path.write_bytes(b"P5\n# a test digit\n28 28\n255\n" + image.tobytes())
    else:
        path.write_text("P2\n28 28\n255\n" + " ".join(map(str, image.ravel())) + "\n")


def test_predict_reads_pgm_png_and_idx(capsys, tmp_path, model_file, mnist):
    model = load(model_file)
    images = mnist.test_images[:3]
    expected = model.predict(images)
    write_pgm(tmp_path / "a.pgm", images[0].reshape(28, 28))
    write_pgm(tmp_path / "b.pgm", images[1].reshape(28, 28), binary=False)
    idx = tmp_path / "c.idx"
    idx.write_bytes(
        b"\x00\x00\x08\x03"
        + (3).to_bytes(4, "big")
        + (28).to_bytes(4, "big") * 2
        + images.tobytes()
    )
    files = [str(tmp_path / "a.pgm"), str(tmp_path / "b.pgm"), str(idx)]
    from PIL import Image

    Image.fromarray(images[2].reshape(28, 28)).save(tmp_path / "d.png")
    files.append(str(tmp_path / "d.png"))
    code, out, _ = run(capsys, "predict", str(model_file), *files)
    assert code == 0
    got = [int(line.split(": ")[1].split()[0]) for line in out.splitlines()]
    assert got == [expected[0], expected[1], *expected, expected[2]]


def test_predict_refuses_wrong_image_size(capsys, tmp_path, model_file):
    (tmp_path / "small.pgm").write_bytes(b"P5 4 4 255\n" + bytes(16))
    code, _, err = run(capsys, "predict", str(model_file), str(tmp_path / "small.pgm"))
    assert code == 2 and "28x28" in err


@pytest.mark.slow
def test_train_resume_gives_the_same_bits_as_one_run(capsys, tmp_path, mnist):
    common = ["train", "--dataset", "mnist", "--arch", "784-20-10", "--seed", "4", "--quiet"]
    assert run(capsys, *common, "--epochs", "2", "--out", str(tmp_path / "a.npz"))[0] == 0
    assert run(capsys, *common, "--epochs", "1", "--out", str(tmp_path / "b.npz"))[0] == 0
    code, out, _ = run(
        capsys,
        "train",
        "--dataset",
        "mnist",
        "--resume",
        "--epochs",
        "2",
        "--quiet",
        "--out",
        str(tmp_path / "b.npz"),
    )
    assert code == 0 and "after 2 epochs" in out
    a, state_a, _ = load_checkpoint(tmp_path / "a.npz")
    b, state_b, _ = load_checkpoint(tmp_path / "b.npz")
    for la, lb in zip(a.layers, b.layers):
        assert np.array_equal(la.W, lb.W) and np.array_equal(la.b, lb.b)
    assert state_a["epoch"] == state_b["epoch"] == 2
    log = [json.loads(line) for line in (tmp_path / "b.log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    log_a = [json.loads(line) for line in (tmp_path / "a.log.jsonl").read_text().splitlines()]
    assert [r["test_correct"] for r in log] == [r["test_correct"] for r in log_a]


def test_export_c_writes_a_header_and_source(capsys, tmp_path, model_file):
    code, out, _ = run(
        capsys, "export-c", str(model_file), "--out", str(tmp_path / "fw"), "--name", "digits"
    )
    assert code == 0
    assert (tmp_path / "fw" / "digits.h").is_file() and (tmp_path / "fw" / "digits.c").is_file()
    assert "digits_predict" in (tmp_path / "fw" / "digits.h").read_text()
    assert out.count("wrote ") == 2


def test_export_c_bad_name_is_one_line_error(capsys, tmp_path, model_file):
    code, _, err = run(capsys, "export-c", str(model_file), "--out", str(tmp_path), "--name", "9x")
    assert code == 2 and err.count("\n") == 1 and "9x" in err
    assert not list(tmp_path.iterdir())


def test_existing_model_is_not_replaced_without_force(capsys, tmp_path, model_file):
    out = tmp_path / "m.npz"
    out.write_bytes(model_file.read_bytes())
    before = out.read_bytes()
    code, _, err = run(capsys, "train", "--dataset", "mnist", "--out", str(out), "--epochs", "0")
    assert code == 2 and "--force" in err and out.read_bytes() == before
    code, _, _ = run(
        capsys,
        "train",
        "--dataset",
        "mnist",
        "--arch",
        "784-10",
        "--epochs",
        "0",
        "--force",
        "--quiet",
        "--out",
        str(out),
    )
    assert code == 0 and load(out).dims == [784, 10]


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (
            ["--lr-inv", "500", "--arch", "784-50-10"],
            ["--lr-inv 500 (saved: 1000)", "--arch 784-50-10"],
        ),
        (["--activation", "pocket_sigmoid", "--preset", "best"], ["--activation", "--preset best"]),
    ],
)
def test_resume_refuses_flags_that_change_the_run(capsys, tmp_path, model_file, flags, fragments):
    out = tmp_path / "m.npz"
    out.write_bytes(model_file.read_bytes())
    code, _, err = run(capsys, "train", "--dataset", "mnist", "--resume", *flags, "--out", str(out))
    assert code == 2 and all(fragment in err for fragment in fragments), err


def test_resume_refuses_another_dataset_and_out_must_be_a_file(capsys, tmp_path, model_file):
    out = tmp_path / "m.npz"
    out.write_bytes(model_file.read_bytes())
    code, _, err = run(capsys, "train", "--dataset", "fashion-mnist", "--resume", "--out", str(out))
    assert code == 2 and "trained on mnist" in err
    code, _, err = run(capsys, "train", "--dataset", "mnist", "--out", str(tmp_path))
    assert code == 2 and "is a folder" in err


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"P2\n28 28\n255\n" + b"999 " * 784, "0..255"),
        (b"P2\n28 28\n255\n" + b"-1 " * 784, "0..255"),
        (b"P2\n28 28\n0\n" + b"0 " * 784, "maxval 0"),
        (b"P5 28 28", "PGM header"),
        (b"P2 # comment without newline", "PGM header"),
        (b"P2\n28 28\n255\n" + b"x " * 784, "not an integer"),
        (b"P5\n28 28\n255\n" + bytes(100), "100 pixels"),
    ],
)
def test_predict_refuses_bad_pgm(capsys, tmp_path, model_file, content, fragment):
    path = tmp_path / "bad.pgm"
    path.write_bytes(content)
    code, _, err = run(capsys, "predict", str(model_file), str(path))
    assert code == 2 and fragment in err and "bad.pgm" in err and err.count("\n") == 1


def test_predict_refuses_out_of_range_idx_pixels(capsys, tmp_path, model_file):
    path = tmp_path / "wide.idx"
    values = np.zeros((1, 28, 28), dtype=">i4")
    values[0, 0, 0] = 300
    path.write_bytes(
        b"\x00\x00\x0c\x03"
        + (1).to_bytes(4, "big")
        + (28).to_bytes(4, "big") * 2
        + values.tobytes()
    )
    code, _, err = run(capsys, "predict", str(model_file), str(path))
    assert code == 2 and "0..255" in err


def test_pgm_with_smaller_maxval_is_scaled(capsys, tmp_path, model_file, mnist):
    image = mnist.test_images[0].reshape(28, 28)
    (tmp_path / "full.pgm").write_bytes(b"P5 28 28 255\n" + image.tobytes())
    half = (image.astype(np.int64) * 15 // 255).astype(np.uint8)
    (tmp_path / "fifteen.pgm").write_bytes(b"P5 28 28 15\n" + half.tobytes())
    code, out, _ = run(capsys, "predict", str(model_file), str(tmp_path / "fifteen.pgm"))
    expected = load(model_file).predict((half.astype(np.int64) * 255 // 15).reshape(1, -1))
    assert code == 0 and out.split(": ")[1].split()[0] == str(expected[0])
