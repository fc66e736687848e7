"""Integer training: direct feedback alignment (default) and integer backprop.

A step is: forward the batch keeping each layer's input and gradient-inverse, take the
loss delta ``e = y_hat - target``, turn it into one delta per layer (the rule), then update
every layer with ``W += (a_prev.T @ delta) / -lr_inv`` and clamp.

Randomness is injectable so that a run can be replayed exactly: pass ``feedback`` (DFA's
fixed matrices, one of shape (n_classes, width) per hidden layer) and ``sample_order`` (a
function from the 1-based epoch number to a permutation of the training indices, or a list
of such permutations). Left out, both are derived from ``seed`` alone, so the same seed
gives the same bits on every run and every engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import intmath
from .intmath import INT32_MAX, isqrt, matmul, single_thread_blas, trunc_div
from .losses import TARGET_VALUE, l2_loss, one_hot
from .model import Sequential

ALGORITHMS = ("dfa", "bp")
ROUNDINGS = ("trunc", "stochastic")
_STREAM_FEEDBACK, _STREAM_INIT, _STREAM_ORDER, _STREAM_ROUNDING = 1, 2, 3, 4


def init_range(n_in: int, n_out: int, limit: int = 32767) -> int:
    """The reference's init bound ``isqrt(12 * 32767 // (n_in + n_out))``."""
    return isqrt(12 * limit // (n_in + n_out))


def nonzero_uniform(rng: np.random.Generator, r: int, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform integers in [-r, r] without zero, as int64."""
    u = rng.integers(0, 2 * r, size=shape, dtype=np.int64)
    return u - r + (u >= r)


def random_feedback(model: Sequential, seed: int) -> list[np.ndarray]:
    """DFA feedback matrices for each hidden layer, shape (n_classes, width), int32."""
    rng = np.random.default_rng([seed, _STREAM_FEEDBACK])
    n_classes = model.dims[-1]
    return [
        nonzero_uniform(rng, init_range(layer.n_in, layer.n_out), (n_classes, layer.n_out)).astype(
            np.int32
        )
        for layer in model.layers[:-1]
    ]


def he_init(model: Sequential, seed: int) -> None:
    """Backprop's He-style init: non-zero uniform integers in [-r, r], W then b per layer."""
    rng = np.random.default_rng([seed, _STREAM_INIT])
    for layer in model.layers:
        r = min(init_range(layer.n_in, layer.n_out), layer.weight_clamp)
        layer.set_params(
            nonzero_uniform(rng, r, layer.W.shape), nonzero_uniform(rng, r, layer.b.shape)
        )


def seeded_order(seed: int, n: int) -> Callable[[int], np.ndarray]:
    """Epoch number -> a permutation of ``range(n)``, fixed by ``seed`` and the epoch alone."""

    def order(epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, _STREAM_ORDER, epoch]).permutation(n)

    return order


def lr_inv_at(epoch: int, lr_inv: int, double_every: int) -> int:
    """The reference schedule: ``lr_inv`` doubles at each epoch divisible by ``double_every``.

    It saturates at INT32_MAX, the largest value the reference's 32-bit ``lrInv`` holds (by
    then every truncated update of an int32 gradient is already zero).
    """
    if double_every <= 0:
        return lr_inv
    return min(lr_inv << (epoch // double_every), INT32_MAX)


@dataclass
class EpochResult:
    """What one epoch measured. Counts are integers; only ``seconds`` is a float (wall time)."""

    epoch: int
    lr_inv: int
    loss: int
    train_correct: int
    train_total: int
    test_correct: int | None
    test_total: int | None
    seconds: float


class Trainer:
    """Trains a :class:`~pocketnn.model.Sequential` with integers only.

    Parameters
    ----------
    model : the network; DFA starts from its current weights (all zero when fresh)
    algorithm : ``"dfa"`` (direct feedback alignment) or ``"bp"`` (integer backprop)
    lr_inv : learning-rate inverse; every update divides by ``-lr_inv``
    batch_size : samples per step (the last batch of an epoch may be smaller)
    lr_double_every : ``lr_inv`` doubles at epochs divisible by this (0: never)
    target_value : the one-hot target value
    seed : source of the feedback matrices and the per-epoch sample order
    feedback : DFA matrices to use instead of random ones
    sample_order : epoch -> permutation, or a sequence of permutations (index epoch - 1)
    bp_updated_weights : backprop propagates through the weights *after* their update, as
        the reference does; ``False`` gives textbook backprop
    rounding : how the update ``(a.T @ delta) / -lr_inv`` is rounded: ``"trunc"`` toward
        zero, as the reference; ``"stochastic"`` up or down at random with the probabilities
        that make it unbiased (integer draws seeded by ``seed`` and the epoch), so updates
        smaller than ``lr_inv`` are not lost

    Examples
    --------
    >>> from pocketnn import build_mlp, Trainer
    >>> model = build_mlp([784, 100, 50, 10])
    >>> trainer = Trainer(model, seed=1)
    >>> # trainer.fit(x_train, y_train, epochs=1, x_test=x_test, y_test=y_test)
    """

    def __init__(
        self,
        model: Sequential,
        algorithm: str = "dfa",
        lr_inv: int = 1000,
        batch_size: int = 20,
        lr_double_every: int = 10,
        target_value: int = TARGET_VALUE,
        seed: int = 0,
        feedback: Sequence[np.ndarray] | None = None,
        sample_order: Callable[[int], np.ndarray] | Sequence[np.ndarray] | None = None,
        bp_updated_weights: bool = True,
        rounding: str = "trunc",
    ) -> None:
        for label, value, allowed in (
            ("algorithm", algorithm, ALGORITHMS),
            ("rounding", rounding, ROUNDINGS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {label} {value!r}; choose one of {', '.join(allowed)}")
        for label, value, low, high in (
            ("lr_inv", lr_inv, 1, INT32_MAX),  # the reference's lrInv is a 32-bit int
            ("batch_size", batch_size, 1, None),
            ("lr_double_every", lr_double_every, 0, None),
            ("seed", seed, 0, None),
        ):
            if not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
            if high is not None and value > high:
                raise ValueError(f"{label} must be at most {high}, got {value!r}")
        self.model = model
        self.algorithm = algorithm
        self.lr_inv = int(lr_inv)
        self.batch_size = int(batch_size)
        self.lr_double_every = int(lr_double_every)
        self.target_value = int(target_value)
        self.seed = int(seed)
        self.bp_updated_weights = bool(bp_updated_weights)
        self.rounding = rounding
        self._rounding_rng: np.random.Generator | None = None
        self._rounding_epoch = 0
        self.sample_order = sample_order
        self.feedback: list[np.ndarray] = []
        if algorithm == "dfa":
            self.feedback = (
                self._checked_feedback(feedback)
                if feedback is not None
                else (random_feedback(model, self.seed))
            )
        self.epoch = 0  # epochs completed
        self.history: list[EpochResult] = []

    def _checked_feedback(self, feedback: Sequence[np.ndarray]) -> list[np.ndarray]:
        hidden = self.model.layers[:-1]
        if len(feedback) != len(hidden):
            raise ValueError(f"DFA needs {len(hidden)} feedback matrices, got {len(feedback)}")
        out = []
        for layer, b in zip(hidden, feedback):
            b = np.asarray(b)
            expected = (self.model.dims[-1], layer.n_out)
            if b.dtype.kind not in "iu" or b.shape != expected:
                raise ValueError(
                    f"{layer.name}: feedback must be an integer array of shape {expected}, "
                    f"got {b.dtype} {b.shape}"
                )
            out.append(b)
        return out

    def order(self, epoch: int, n: int) -> np.ndarray:
        """The sample order of a 1-based epoch."""
        if self.sample_order is None:
            return seeded_order(self.seed, n)(epoch)
        if callable(self.sample_order):
            order = self.sample_order(epoch)
        else:
            order = self.sample_order[epoch - 1]
        order = np.asarray(order)
        if order.dtype.kind not in "iu" or order.shape != (n,):
            raise ValueError(f"sample order of epoch {epoch} must be {n} integer indices")
        return order

    def step(
        self, x: np.ndarray, targets: np.ndarray, lr_inv: int | None = None
    ) -> tuple[int, int]:
        """One training step on a batch; returns (summed loss, correct predictions) before it."""
        lr_inv = self.lr_inv if lr_inv is None else lr_inv
        rng = self._rounding_for(self.epoch + 1)
        if self.algorithm == "dfa" and intmath.settings.engine == "fused":
            from . import fused  # imports numba: only when the engine is selected

            plan = fused.plan_for(self.model, self.feedback, x, lr_inv)
            if plan is not None:  # else (unsupported model): the blas step below
                result = fused.dfa_step(self.model, self.feedback, x, targets, lr_inv, rng, plan)
                if result is not None:
                    return result
        output, cache = self.model.forward(x)
        loss, e = l2_loss(output, targets)
        correct = int(np.count_nonzero(output.argmax(axis=1) == targets.argmax(axis=1)))
        layers = self.model.layers
        if self.algorithm == "dfa":
            for layer, (a_prev, g), b in zip(layers[:-1], cache[:-1], self.feedback):
                err = matmul(e, b, where=f"{layer.name}: feedback e @ B")
                layer.update(a_prev, trunc_div(err, g), lr_inv, rng)
            layers[-1].update(cache[-1][0], trunc_div(e, cache[-1][1]), lr_inv, rng)
        else:
            delta = trunc_div(e, cache[-1][1])
            for i in range(len(layers) - 1, -1, -1):
                w_before = layers[i].W if self.bp_updated_weights else layers[i].W.copy()
                layers[i].update(cache[i][0], delta, lr_inv, rng)
                if i:
                    back = matmul(
                        delta, w_before.T, where=f"{layers[i].name}: backward delta @ W.T"
                    )
                    delta = trunc_div(back, cache[i - 1][1])
        return loss, correct

    def _rounding_for(self, epoch: int) -> np.random.Generator | None:
        """The stochastic-rounding stream of an epoch (None when rounding truncates).

        One stream per epoch, seeded by ``[seed, stream, epoch]``, so a resumed run draws
        exactly what an uninterrupted one would.
        """
        if self.rounding == "trunc":
            return None
        if self._rounding_rng is None or self._rounding_epoch != epoch:
            self._rounding_rng = np.random.default_rng([self.seed, _STREAM_ROUNDING, epoch])
            self._rounding_epoch = epoch
        return self._rounding_rng

    def train_epoch(
        self,
        x: np.ndarray,
        labels: np.ndarray,
        progress: Callable[[int, int], None] | None = None,
    ) -> EpochResult:
        """Train one epoch over ``(x, labels)``; ``progress(done, total)`` is called per step."""
        x = self.model.check_input(x)
        epoch = self.epoch + 1
        lr_inv = lr_inv_at(epoch, self.lr_inv, self.lr_double_every)
        targets = one_hot(labels, self.model.dims[-1], self.target_value)
        order = self.order(epoch, x.shape[0])
        start = time.perf_counter()
        loss = correct = 0
        steps = -(-x.shape[0] // self.batch_size)
        with single_thread_blas():
            for s in range(steps):
                idx = order[s * self.batch_size : (s + 1) * self.batch_size]
                batch_loss, batch_correct = self.step(x[idx], targets[idx], lr_inv)
                loss += batch_loss
                correct += batch_correct
                if progress is not None:
                    progress(s + 1, steps)
        self.epoch = epoch
        return EpochResult(
            epoch, lr_inv, loss, correct, x.shape[0], None, None, time.perf_counter() - start
        )

    def fit(
        self,
        x: np.ndarray,
        labels: np.ndarray,
        epochs: int,
        x_test: np.ndarray | None = None,
        y_test: np.ndarray | None = None,
        on_epoch: Callable[[EpochResult], None] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[EpochResult]:
        """Train until ``epochs`` epochs are complete (counting any already done).

        After each epoch the test set, if given, is evaluated and ``on_epoch`` is called
        (the place to save a checkpoint or write a log line).
        """
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
        while self.epoch < epochs:
            result = self.train_epoch(x, labels, progress)
            if x_test is not None and y_test is not None:
                result.test_correct = self.model.count_correct(x_test, y_test)
                result.test_total = len(y_test)
            self.history.append(result)
            if on_epoch is not None:
                on_epoch(result)
        return self.history

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Training state for a checkpoint: JSON-able settings and the feedback arrays."""
        settings = {
            "algorithm": self.algorithm,
            "lr_inv": self.lr_inv,
            "batch_size": self.batch_size,
            "lr_double_every": self.lr_double_every,
            "target_value": self.target_value,
            "seed": self.seed,
            "bp_updated_weights": self.bp_updated_weights,
            "rounding": self.rounding,
            "epoch": self.epoch,
            "history": [vars(r) for r in self.history],
        }
        return settings, {f"feedback{i}": b for i, b in enumerate(self.feedback)}

    @classmethod
    def from_state(
        cls, model: Sequential, settings: dict, arrays: dict[str, np.ndarray], sample_order=None
    ) -> Trainer:
        """Rebuild a trainer from :meth:`state` so that training resumes to the same bits."""
        feedback = (
            [arrays[f"feedback{i}"] for i in range(len(model.layers) - 1)]
            if (settings["algorithm"] == "dfa")
            else None
        )
        trainer = cls(
            model,
            settings["algorithm"],
            settings["lr_inv"],
            settings["batch_size"],
            settings["lr_double_every"],
            settings["target_value"],
            settings["seed"],
            feedback,
            sample_order,
            settings["bp_updated_weights"],
            settings.get("rounding", "trunc"),
        )
        trainer.epoch = int(settings["epoch"])
        trainer.history = [EpochResult(**r) for r in settings.get("history", [])]
        return trainer
