"""No array on the training or inference path has a floating-point dtype.

A profiler hook sees every Python frame of the pocketnn package return during a real
training step, an epoch loop, evaluation and save/load, and inspects every numpy array
in the frame's locals and in its return value. With the ``int`` engine nothing may be a
float at all. With the default ``blas`` engine the only float arrays allowed are the
reused float work buffers of the exact matmul (``_as_float``), whose use is proven
exact by the bound check in ``exact_matmul`` (:mod:`pocketnn.engines.blas`).
"""

import sys
from pathlib import Path

import numpy as np
import pytest

import pocketnn
from pocketnn import Trainer, build_mlp, configure

PACKAGE = str(Path(pocketnn.__file__).parent)
BLAS_FLOAT_FRAMES = {"_as_float", "_buffer", "blas_product", "workspace"}


def arrays_in(value, depth=0):
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, (tuple, list)) and depth < 3:
        for item in value:
            yield from arrays_in(item, depth + 1)
    elif isinstance(value, dict) and depth < 3:
        for item in value.values():
            yield from arrays_in(item, depth + 1)


def audit(fn, allowed_frames=frozenset()):
    """Run ``fn`` and return (frame name, variable) for each float array seen in pocketnn."""
    found = []
    frames_seen = set()

    def hook(frame, event, arg):
        if event != "return" or not frame.f_code.co_filename.startswith(PACKAGE):
            return
        name = frame.f_code.co_name
        frames_seen.add(name)
        if name in allowed_frames:
            return
        for var, value in list(frame.f_locals.items()) + [("<return>", arg)]:
            for a in arrays_in(value):
                if a.dtype.kind not in "iub":
                    found.append((name, var, str(a.dtype)))

    sys.setprofile(hook)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return found, frames_seen


def training_session(mnist, tmp_path, algorithm):
    def go():
        model = build_mlp([784, 24, 16, 10])
        trainer = Trainer(model, rule=algorithm, seed=1)
        if algorithm == "bp":
            from pocketnn.train.seeding import he_init

            he_init(model, 1)
        trainer.fit(
            mnist.train_images[:400],
            mnist.train_labels[:400],
            1,
            x_test=mnist.test_images[:300],
            y_test=mnist.test_labels[:300],
        )
        trainer.save(tmp_path / "m.npz")
        Trainer.load(tmp_path / "m.npz").model.predict(mnist.test_images[:50])

    return go


@pytest.mark.parametrize("algorithm", ["dfa", "bp"])
def test_int_engine_has_no_float_anywhere(mnist, tmp_path, algorithm):
    with configure(engine="int", overflow="wrap"):  # integer BP overflows, as the paper says
        found, frames = audit(training_session(mnist, tmp_path, algorithm))
    assert {
        "_layered_step",
        "update",
        "propose",
        "commit",
        "forward",
        "infer",
        "trunc_div",
        "matmul",
        "l2_loss",
        "save",
        "load_checkpoint",
        "evaluate",  # the test set's accuracy and loss after each epoch
        "scores",
    } <= frames
    assert found == []


@pytest.mark.gcc
@pytest.mark.parametrize("algorithm", ["dfa", "bp"])
def test_compiled_engine_has_no_float_anywhere(mnist, tmp_path, algorithm):
    """Its Python side passes integer arrays only (its C is audited in test_compiled.py);
    backprop, which it does not cover, runs the layered step with integer products."""
    with configure(engine="compiled", overflow="wrap"):
        found, frames = audit(training_session(mnist, tmp_path, algorithm))
    assert {"train_epoch", "scores", "save"} <= frames
    assert ("_layered_step" in frames) == (algorithm == "bp")
    assert found == []


@pytest.mark.parametrize("algorithm", ["dfa", "bp"])
@pytest.mark.parametrize("engine", ["blas", "fused"])
def test_blas_engine_confines_floats_to_the_exact_matmul_buffers(
    mnist, tmp_path, algorithm, engine
):
    """Also the ``fused`` engine: its kernels are compiled code, audited in test_fused.py."""
    if engine == "fused":
        pytest.importorskip("numba")
    with configure(engine=engine, overflow="wrap"):
        found, frames = audit(training_session(mnist, tmp_path, algorithm), BLAS_FLOAT_FRAMES)
    assert "_as_float" in frames
    assert ("_layered_step" in frames) != (engine == "fused" and algorithm == "dfa")
    assert found == []


def test_the_audit_catches_a_float(mnist, tmp_path):
    """The hook is not blind: a float array in a pocketnn frame is reported."""
    from pocketnn.engines import blas

    found, _ = audit(lambda: blas.blas_product(np.ones((2, 3), np.int8), np.ones((3, 2), np.int8)))
    assert ("_as_float", "buf", "float64") in found
