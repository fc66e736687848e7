import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pocketnn import ModelFileError, Trainer, build_mlp, load, load_checkpoint, save
from pocketnn.io.model_file import FORMAT_VERSION


@pytest.fixture
def trained(mnist):
    model = build_mlp([784, 30, 10])
    Trainer(model, seed=1).fit(mnist.train_images[:3000], mnist.train_labels[:3000], 1)
    return model


def test_save_load_round_trip_is_identical(tmp_path, trained, mnist):
    path = tmp_path / "m.npz"
    save(path, trained)
    loaded = load(path)
    assert loaded.dims == trained.dims
    for a, b in zip(trained.layers, loaded.layers):
        assert a.W.dtype == b.W.dtype and np.array_equal(a.W, b.W) and np.array_equal(a.b, b.b)
        assert a.activation_name == b.activation_name
    x = mnist.test_images[:500]
    assert np.array_equal(trained.scores(x), loaded.scores(x))
    assert np.array_equal(trained.predict(x), loaded.predict(x))


def test_file_holds_only_integer_arrays(tmp_path, trained):
    path = tmp_path / "m.npz"
    save(
        path,
        trained,
        training={"epoch": 1},
        extra_arrays={"feedback0": np.ones((10, 30), np.int32)},
    )
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[k].dtype.kind in "iu" for k in npz.files)
    _, state, arrays = load_checkpoint(path)
    assert state == {"epoch": 1} and arrays["feedback0"].shape == (10, 30)


def test_save_refuses_float_arrays(tmp_path, trained):
    with pytest.raises(TypeError, match="integer"):
        save(tmp_path / "m.npz", trained, extra_arrays={"x": np.ones(3)})
    assert not (tmp_path / "m.npz").exists()


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, trained):
    path = tmp_path / "m.npz"
    path.write_bytes(b"old")
    save(path, trained)
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    load(path)


def corrupt_variants(good: bytes):
    yield "truncated", good[: len(good) // 2]
    yield "empty", b""
    yield "garbage", b"not a model at all" * 10
    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0xFF
    yield "flipped byte", bytes(flipped)


@pytest.mark.parametrize("case", ["truncated", "empty", "garbage", "flipped byte"])
def test_corrupt_files_are_refused_clearly(tmp_path, trained, case):
    path = tmp_path / "m.npz"
    save(path, trained)
    data = dict(corrupt_variants(path.read_bytes()))[case]
    path.write_bytes(data)
    with pytest.raises(ModelFileError, match=str(path.name)):
        load(path)


def rewrite(path, mutate):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    mutate(arrays)
    np.savez(path, **arrays)


def rewrite_meta(path, mutate, keep_checksum=False):
    """Edit a model file's metadata record; re-sign it unless ``keep_checksum``."""
    from pocketnn.io import model_file

    def edit(arrays):
        meta = json.loads(arrays["meta"].tobytes())
        mutate(meta)
        if not keep_checksum:
            del meta["sha256"]
            weights = {k: v for k, v in arrays.items() if k != "meta"}
            meta["sha256"] = model_file.digest(weights, meta)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

    rewrite(path, edit)


def test_changed_weights_fail_the_checksum(tmp_path, trained):
    path = tmp_path / "m.npz"
    save(path, trained)
    rewrite(path, lambda a: a["layers.0.W"].__setitem__((0, 0), 123))
    with pytest.raises(ModelFileError, match="checksum"):
        load(path)


def test_pickled_content_is_never_unpickled(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, meta=np.array([{"format": "pocketnn-model"}], dtype=object))
    with pytest.raises(ModelFileError):
        load(path)


def test_missing_file_and_non_zip(tmp_path):
    with pytest.raises(ModelFileError, match="no such"):
        load(tmp_path / "absent.npz")
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(ModelFileError):
        load(tmp_path / "z.npz")


def test_input_checks():
    model = build_mlp([784, 10])
    with pytest.raises(TypeError, match="integer"):
        model.predict(np.zeros((2, 784)))
    with pytest.raises(ValueError, match=r"\(N, 784\)"):
        model.predict(np.zeros((2, 783), dtype=np.uint8))
    with pytest.raises(ValueError, match="expects input of shape 50"):
        from pocketnn import Dense, Sequential

        Sequential([Dense(784, 100, name="fc1"), Dense(50, 10, name="fc2")])
    with pytest.raises(ValueError, match="positive"):
        build_mlp([784, 0, 10])


def test_set_params_checks_shape_dtype_and_range():
    layer = build_mlp([3, 2]).layers[0]
    with pytest.raises(TypeError):
        layer.set_params(np.zeros((3, 2)), np.zeros((1, 2), dtype=int))
    with pytest.raises(ValueError, match="shape"):
        layer.set_params(np.zeros((2, 3), dtype=int), np.zeros((1, 2), dtype=int))
    with pytest.raises(ValueError, match="exceed"):
        layer.set_params(np.full((3, 2), 40000), np.zeros((1, 2), dtype=int))


def test_resume_continues_to_the_very_same_bits(tmp_path, mnist):
    x, y = mnist.train_images[:2000], mnist.train_labels[:2000]
    straight = build_mlp([784, 30, 10])
    Trainer(straight, seed=9).fit(x, y, 3)

    model = build_mlp([784, 30, 10])
    trainer = Trainer(model, seed=9)
    trainer.fit(x, y, 1)
    state, arrays = trainer.state()
    save(tmp_path / "ckpt.npz", model, training=state, extra_arrays=arrays)
    model2, state2, arrays2 = load_checkpoint(tmp_path / "ckpt.npz")
    resumed = Trainer.from_state(model2, state2, arrays2)
    assert resumed.epoch == 1
    resumed.fit(x, y, 3)
    for a, b in zip(straight.layers, model2.layers):
        assert np.array_equal(a.W, b.W) and np.array_equal(a.b, b.b)


def test_edited_metadata_fails_the_checksum(tmp_path, trained):
    path = tmp_path / "m.npz"
    save(path, trained, training={"epoch": 1})

    rewrite_meta(
        path,
        lambda meta: meta["layers"][0].__setitem__("activation", "pocket_sigmoid"),
        keep_checksum=True,
    )
    with pytest.raises(ModelFileError, match="checksum"):
        load(path)


# --------------------------------------------------------------------------- format 2 files

DATA = Path(__file__).parent / "data"


def test_format_2_files_of_the_previous_release_still_load_to_the_same_bits(mnist):
    """Files written by release 0.1.0 (commit 381eb8f, format 2; see tests/data/README.md)."""
    expected = np.load(DATA / "format2_expected.npz")
    dfa = load(DATA / "format2_dfa.npz")
    assert [type(layer).__name__ for layer in dfa.layers] == ["Dense"] * 3
    assert np.array_equal(dfa.scores(mnist.test_images[:500]), expected["dfa_scores"])
    small = (
        mnist.test_images[:500].reshape(-1, 28, 28)[:, ::4, ::4][:, :6, :6].reshape(500, -1) // 64
    ).astype(np.uint8)
    plain = load(DATA / "format2_plain.npz")
    assert plain.layers[-1].activation_name == "as_is"
    assert np.array_equal(plain.scores(small), expected["plain_scores"])


def test_a_format_2_checkpoint_resumes_as_the_previous_release_did(mnist):
    """One more epoch from the old file gives the weights the old release computed."""
    expected = np.load(DATA / "format2_expected.npz")
    trainer = Trainer.load(DATA / "format2_dfa.npz")
    assert (trainer.epoch, trainer.rounding, trainer.lr_double_every) == (2, "stochastic", 1)
    trainer.fit(mnist.train_images[:2000], mnist.train_labels[:2000], 3)
    layers = trainer.model.layers
    assert np.array_equal(layers[0].W, expected["resumed_W"])
    assert np.array_equal(layers[1].W, expected["resumed_W2"])
    assert np.array_equal(layers[2].W, expected["resumed_W3"])
    assert np.array_equal(layers[2].b, expected["resumed_b3"])


def test_format_3_stores_typed_layers_and_refuses_other_versions(tmp_path, trained):
    path = tmp_path / "m.npz"
    save(path, trained)
    with np.load(path) as npz:
        meta = json.loads(npz["meta"].tobytes())
        assert {"layers.0.W", "layers.0.b", "layers.1.W", "layers.1.b"} <= set(npz.files)
    assert meta["version"] == FORMAT_VERSION == 3
    assert meta["layers"][0] == {
        "type": "Dense",
        "name": "fc1",
        "n_in": 784,
        "n_out": 30,
        "activation": "pocket_tanh",
        "weight_clamp": 32767,
    }
    for version in (1, FORMAT_VERSION + 1, "3"):
        rewrite_meta(path, lambda meta, v=version: meta.__setitem__("version", v))
        with pytest.raises(ModelFileError, match="format version .* is not supported"):
            load(path)


def test_an_unknown_layer_type_is_refused_with_its_name(tmp_path, trained):
    path = tmp_path / "m.npz"
    save(path, trained)

    rewrite_meta(path, lambda meta: meta["layers"][1].__setitem__("type", "Conv9D"))
    with pytest.raises(ModelFileError, match="unknown layer type 'Conv9D'"):
        load(path)
