import numpy as np
import pytest

from pocketnn import IntegerOverflowError, Trainer, build_mlp, configure
from pocketnn.core.arith import trunc_div
from pocketnn.nn.losses import l2_loss, one_hot
from pocketnn.train.optimizer import IntegerSGD
from pocketnn.train.rules import random_feedback
from pocketnn.train.seeding import init_range, seeded_order


def lr_inv_at(epoch, lr_inv, double_every):
    return IntegerSGD(lr_inv=lr_inv, lr_double_every=double_every).lr_inv_at(epoch)


def golden_trainer(golden_dfa):
    model = build_mlp([784, 100, 50, 10])
    trainer = Trainer(
        model,
        feedback=[golden_dfa["dfa_fc1"], golden_dfa["dfa_fc2"]],
        sample_order=[golden_dfa["order_epoch1"]],
    )
    return model, trainer


def params_equal(model, golden, prefix):
    return all(
        np.array_equal(getattr(layer, p), golden[f"{prefix}_fc{i + 1}_{p}"])
        for i, layer in enumerate(model.layers)
        for p in "Wb"
    )


def test_first_step_intermediates_match_the_reference(golden_dfa):
    model, trainer = golden_trainer(golden_dfa)
    x = golden_dfa["step1_batch_images"].astype(np.uint8)
    out, cache = model.forward(x)
    assert np.array_equal(out, golden_dfa["step1_out_last"])
    for i, (_, g) in enumerate(cache):  # a dense layer caches (input, gradient inverse)
        assert np.array_equal(g, golden_dfa[f"step1_fc{i + 1}_gradinv"])
    loss, delta = l2_loss(out, golden_dfa["step1_batch_targets"])
    assert loss == golden_dfa["step1_batch_loss"]
    assert np.array_equal(delta, golden_dfa["step1_loss_delta"])
    trainer.step(x, targets=golden_dfa["step1_batch_targets"])
    assert params_equal(model, golden_dfa, "after_step1")
    # step 2 starts from step 1's weights: its forward pass shows them at work
    z2 = model.layers[0].infer(golden_dfa["step2_batch_images"].astype(np.uint8))
    assert np.array_equal(z2, golden_dfa["step2_fc1_out"])


def test_dfa_epoch_reproduces_every_reference_snapshot(golden_dfa, mnist):
    """3000 steps on real MNIST from zero weights: bit for bit with the C++ reference."""
    model, trainer = golden_trainer(golden_dfa)
    targets = one_hot(mnist.train_labels, 10)
    order = golden_dfa["order_epoch1"]
    losses, corrects = [], []
    for s in range(1, 3001):
        idx = order[20 * (s - 1) : 20 * s]
        loss, correct = trainer.step(mnist.train_images[idx], targets=targets[idx])
        losses.append(loss)
        corrects.append(correct)
        if s in (1, 2, 3, 10, 100, 1000, 3000):
            assert params_equal(model, golden_dfa, f"after_step{s}"), f"step {s}"
        if s in (1, 500, 2999):
            sums = [
                [
                    int(layer.W.sum()),
                    int(np.abs(layer.W).sum()),
                    int(layer.b.sum()),
                    int(np.abs(layer.b).sum()),
                ]
                for layer in model.layers
            ]
            assert sums == golden_dfa["epoch1_param_checksums"][s - 1].tolist(), f"step {s}"
    assert losses == golden_dfa["epoch1_batch_loss"].tolist()
    assert corrects == golden_dfa["epoch1_batch_correct"].tolist()
    assert sum(losses) == golden_dfa["epoch1_sum_loss"] == 1070190
    assert sum(corrects) == golden_dfa["epoch1_train_correct"]
    pred = model.predict(mnist.test_images)
    assert np.array_equal(pred, golden_dfa["epoch1_test_pred"])
    assert int((pred == mnist.test_labels).sum()) == golden_dfa["epoch1_test_correct"] == 9484


def test_train_epoch_with_injected_order_equals_manual_steps(golden_dfa, mnist):
    """The epoch loop, fed the golden order, lands on the golden end-of-epoch weights."""
    model, trainer = golden_trainer(golden_dfa)
    result = trainer.train_epoch(mnist.train_images, mnist.train_labels)
    assert params_equal(model, golden_dfa, "after_step3000")
    assert result.loss == golden_dfa["epoch1_sum_loss"]
    assert result.train_correct == golden_dfa["epoch1_train_correct"]


def test_zero_network_predicts_class_zero(golden_dfa, mnist):
    model = build_mlp([784, 100, 50, 10])
    assert (
        model.count_correct(mnist.train_images, mnist.train_labels)
        == golden_dfa["init_train_correct"]
    )
    assert (
        model.count_correct(mnist.test_images, mnist.test_labels) == golden_dfa["init_test_correct"]
    )


def test_backprop_reproduces_the_reference_tiny_example(golden_bp):
    model = build_mlp([3, 5, 1], output_activation="as_is")
    for i, layer in enumerate(model.layers):
        layer.set_params(golden_bp[f"init_fc{i + 1}_W"], golden_bp[f"init_fc{i + 1}_b"])
    trainer = Trainer(model, rule="bp", lr_inv=int(golden_bp["lr_inv"]))
    x, target = golden_bp["x"], np.array([[int(golden_bp["y_target"])]])
    y_hats, losses = [], []
    for it in range(100):
        out, cache = model.forward(x)
        y_hats.append(int(out[0, 0]))
        if it == 0:
            assert np.array_equal(cache[0][1], golden_bp["iter1_fc1_gradinv"])
        losses.append(trainer.step(x, targets=target)[0])
        if it == 0:
            assert params_equal(model, golden_bp, "iter1")
    assert y_hats == golden_bp["y_hat"].tolist()
    assert losses == golden_bp["loss"].tolist()
    assert params_equal(model, golden_bp, "final")


def test_textbook_backprop_uses_weights_before_the_update():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, (4, 6), dtype=np.uint8)
    t = one_hot(np.array([0, 1, 2, 1]), 3)
    first_layer = []
    for updated in (True, False):
        model = build_mlp([6, 5, 3], activation="as_is")
        model.layers[0].set_params(
            np.ones((6, 5), dtype=np.int64), np.zeros((1, 5), dtype=np.int64)
        )
        model.layers[1].set_params(np.full((5, 3), 50), np.zeros((1, 3), dtype=np.int64))
        w2_before = model.layers[1].W.astype(np.int64)
        out, cache = model.forward(x)
        Trainer(model, rule="bp", lr_inv=1000, bp_updated_weights=updated).step(x, targets=t)
        first_layer.append(model.layers[0].W.astype(np.int64))
    e = out - t
    delta1 = e @ w2_before.T  # textbook: through the weights of the forward pass (g = 1)
    expected = np.ones((6, 5), dtype=np.int64) + trunc_div(x.T.astype(np.int64) @ delta1, -1000)
    assert np.array_equal(first_layer[1], expected)
    assert not np.array_equal(first_layer[0], first_layer[1])


def small_run(seed=3, engine="blas", epochs=2, rule="dfa", n=2000, data=None):
    x, y = data
    with configure(engine=engine):
        model = build_mlp([784, 32, 10])
        trainer = Trainer(model, rule=rule, seed=seed, batch_size=20)
        history = trainer.fit(x[:n], y[:n], epochs)
    return model, history


def test_same_seed_same_bits_and_other_seed_differs(mnist):
    data = (mnist.train_images, mnist.train_labels)
    a, ha = small_run(seed=3, data=data)
    b, hb = small_run(seed=3, data=data)
    c, _ = small_run(seed=4, data=data)
    for la, lb in zip(a.layers, b.layers):
        assert np.array_equal(la.W, lb.W) and np.array_equal(la.b, lb.b)
    assert [r.loss for r in ha] == [r.loss for r in hb]
    assert not np.array_equal(a.layers[0].W, c.layers[0].W)


@pytest.mark.parametrize("algorithm", ["dfa", "bp"])
def test_engines_train_to_identical_bits(mnist, algorithm):
    data = (mnist.train_images, mnist.train_labels)
    a, ha = small_run(engine="blas", rule=algorithm, data=data, n=1000)
    b, hb = small_run(engine="int", rule=algorithm, data=data, n=1000)
    for la, lb in zip(a.layers, b.layers):
        assert np.array_equal(la.W, lb.W) and np.array_equal(la.b, lb.b)
    assert [(r.loss, r.train_correct) for r in ha] == [(r.loss, r.train_correct) for r in hb]


def test_feedback_is_nonzero_uniform_in_the_reference_range():
    model = build_mlp([784, 100, 50, 10])
    fb = random_feedback(model, seed=0)
    assert [b.shape for b in fb] == [(10, 100), (10, 50)]
    for b, layer in zip(fb, model.layers):
        r = init_range(layer.n_in, layer.n_out)
        assert b.dtype.kind == "i" and np.all(b != 0) and np.abs(b).max() == r
    assert init_range(784, 100) == 21 and init_range(100, 50) == 51


def test_seeded_order_is_a_permutation_fixed_by_seed_and_epoch():
    o = seeded_order(7, 100)
    assert sorted(o(1).tolist()) == list(range(100))
    assert np.array_equal(o(1), seeded_order(7, 100)(1))
    assert not np.array_equal(o(1), o(2))


def test_learning_rate_schedule_doubles_every_ten_epochs():
    assert [lr_inv_at(e, 1000, 10) for e in (1, 9, 10, 19, 20, 30)] == [
        1000,
        1000,
        2000,
        2000,
        4000,
        8000,
    ]
    assert lr_inv_at(25, 1000, 0) == 1000


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rule": "sgd"}, "rule"),
        ({"lr_inv": 0}, "lr_inv"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"lr_double_every": -1}, "lr_double_every"),
        ({"feedback": [np.ones((10, 100), dtype=np.int32)]}, "2 feedback"),
        ({"feedback": [np.ones((10, 100)), np.ones((10, 50))]}, "integer array"),
    ],
)
def test_impossible_hyperparameters_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Trainer(build_mlp([784, 100, 50, 10]), **kwargs)


def test_bad_sample_order_is_refused():
    model = build_mlp([4, 3])
    trainer = Trainer(model, sample_order=[np.arange(3)])
    with pytest.raises(ValueError, match="sample order"):
        trainer.train_epoch(np.zeros((5, 4), dtype=np.uint8), np.zeros(5, dtype=np.uint8))


def test_overflow_raises_naming_layer_and_operation():
    model = build_mlp([784, 10], activation="as_is")
    model.layers[0].set_params(np.full((784, 10), 32767), np.zeros((1, 10), dtype=np.int64))
    x = np.full((1, 784), 255, dtype=np.uint8)
    with pytest.raises(IntegerOverflowError, match=r"fc1: forward a @ W \+ b"):
        model.forward(x)
    with configure(overflow="wrap"):
        out, _ = model.forward(x)
    assert out[0, 0] == np.int64(255 * 32767 * 784).astype(np.int32)


@pytest.mark.slow
def test_one_epoch_on_real_mnist_beats_94_percent(mnist):
    model = build_mlp([784, 100, 50, 10])
    Trainer(model, seed=0).fit(mnist.train_images, mnist.train_labels, epochs=1)
    assert model.count_correct(mnist.test_images, mnist.test_labels) > 9400


def test_stochastic_rounding_is_deterministic_across_engines_and_resume(mnist, tmp_path):
    from pocketnn import load_checkpoint

    x, y = mnist.train_images[:1500], mnist.train_labels[:1500]
    runs = []
    for engine in ("blas", "int"):
        with configure(engine=engine):
            model = build_mlp([784, 20, 10])
            Trainer(model, seed=5, rounding="stochastic").fit(x, y, 2)
            runs.append(model)
    half = build_mlp([784, 20, 10])
    trainer = Trainer(half, seed=5, rounding="stochastic")
    trainer.fit(x, y, 1)
    trainer.save(tmp_path / "c.npz")
    model, state, arrays = load_checkpoint(tmp_path / "c.npz")
    assert state["rounding"] == "stochastic"
    Trainer.from_state(model, state, arrays).fit(x, y, 2)
    runs.append(model)
    truncating = build_mlp([784, 20, 10])
    Trainer(truncating, seed=5).fit(x, y, 2)
    for other in runs[1:]:
        for la, lb in zip(runs[0].layers, other.layers):
            assert np.array_equal(la.W, lb.W) and np.array_equal(la.b, lb.b)
    assert not np.array_equal(runs[0].layers[0].W, truncating.layers[0].W)


def test_unknown_rounding_is_refused():
    with pytest.raises(ValueError, match="rounding"):
        Trainer(build_mlp([4, 2]), rounding="nearest")


def test_l2_loss_is_exact_for_huge_outputs():
    out = np.array([[2**31 - 1, -(2**31)], [2**31 - 1, 0]], dtype=np.int64)
    t = np.array([[15, 0], [0, 15]])
    loss, delta = l2_loss(out, t)
    assert loss == sum(int(v) ** 2 // 2 for v in (out - t).ravel())
    assert delta.tolist() == (out - t).tolist()


def test_lr_inv_is_a_32_bit_value_and_the_schedule_saturates():
    with pytest.raises(ValueError, match="at most 2147483647"):
        Trainer(build_mlp([4, 2]), lr_inv=2**31)
    assert lr_inv_at(400, 1000, 10) == 2**31 - 1


def test_he_init_respects_a_small_weight_clamp():
    from pocketnn.train.seeding import he_init

    model = build_mlp([784, 100, 10], weight_clamp=100)
    he_init(model, 0)
    assert all(np.abs(layer.W).max() <= 100 and np.all(layer.W != 0) for layer in model.layers)
