"""The trainer loop: batches, the rule, the optimizer, and transactional steps.

A step is: forward the batch keeping each layer's cache, take the loss error
``e = y_hat - target``, let the learning rule deliver a delta to every trainable layer,
and let the optimizer turn each layer's gradient into new parameter values. The values are
committed together at the end, so a step that fails (an int32 overflow) leaves every
parameter exactly as it was, on every engine, as the generated C does.

Randomness is injectable so that a run can be replayed exactly: pass ``feedback`` (DFA's
fixed matrices) and ``sample_order`` (a function from the 1-based epoch number to a
permutation of the training indices, or a list of such permutations). Left out, both are
derived from ``seed`` alone, so the same seed gives the same bits on every run and engine.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ..core.arith import INT32_MAX
from ..core.context import Context, current, derive, using
from ..engines import accelerated_epoch, accelerated_step
from ..engines.blas import single_thread_blas
from ..nn.layers import Layer
from ..nn.losses import LOSSES, TARGET_VALUE, one_hot
from ..nn.model import Sequential
from .augment import Augment
from .momentum import MomentumSGD
from .optimizer import IntegerSGD, Update
from .rules import DFA, RULES, Backprop, LearningRule, StepState
from .seeding import STREAM_AUGMENT, seeded_order, stream

ALGORITHMS = tuple(RULES)
"""The names of the learning rules (``--algorithm`` on the command line)."""


@dataclass
class EpochResult:
    """What one epoch measured. Counts are integers; only ``seconds`` is a float (wall time).

    ``loss`` is the training loss summed over the epoch's steps (each batch before its
    update); ``test_loss`` and ``val_loss`` are the L2 loss of the model after the epoch,
    summed over the test and validation samples (None when not evaluated).
    """

    epoch: int
    lr_inv: int
    loss: int
    train_correct: int
    train_total: int
    test_correct: int | None
    test_total: int | None
    seconds: float
    test_loss: int | None = None
    val_correct: int | None = None
    val_total: int | None = None
    val_loss: int | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EpochResult:
        """An epoch's figures from a checkpoint's history, refusing wrongly typed values.

        Fields added since a checkpoint was written (with a default) may be missing.
        """
        fields = cls.__dataclass_fields__
        needed = {n for n, f in fields.items() if f.default is dataclasses.MISSING}
        if not isinstance(record, Mapping) or not needed <= set(record) <= set(fields):
            raise ValueError(f"a history record must hold {', '.join(fields)}")
        for name, value in record.items():
            kinds = (float, int) if name == "seconds" else (int,)
            optional = name.startswith(("test_", "val_"))
            if not (
                (value is None and optional)
                or (isinstance(value, kinds) and not isinstance(value, bool))
            ):
                raise ValueError(f"history: {name} must be a number, got {value!r}")
        return cls(**record)


class NewParameters(Mapping):
    """A layer's parameters as the step's pending updates would leave them (built lazily)."""

    def __init__(self, params: Mapping[str, np.ndarray], updates: Sequence[Update]) -> None:
        self._params = params
        self._updates = {u.name: u for u in updates}

    def __getitem__(self, name: str) -> np.ndarray:
        update = self._updates.get(name)
        if update is None:
            return self._params[name]
        if update.rows is None:
            return update.values
        full = self._params[name].copy()
        full[update.rows] = update.values
        return full

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)


F = TypeVar("F", bound=Callable[..., Any])


def serialized(method: F) -> F:
    """Run ``method`` holding the trainer's lock: calls from several threads take turns.

    A trainer's epoch count, history and random streams change as it trains; two threads
    training one trainer at once would interleave them. With the lock each call runs
    whole, so the result is that of the same calls made one after the other.
    """

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]


OPTIMIZERS: dict[str, type[IntegerSGD]] = {c.name: c for c in (IntegerSGD, MomentumSGD)}
"""Optimizer name (as a checkpoint stores it) -> class."""


def make_rule(
    rule: str | LearningRule,
    feedback: Sequence[np.ndarray] | None,
    bp_updated_weights: bool,
) -> LearningRule:
    """A rule object from its name (or the object itself)."""
    if isinstance(rule, LearningRule):
        return rule
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    if rule == "dfa":
        return DFA(feedback)
    if feedback is not None:
        raise ValueError(f"feedback matrices are for the 'dfa' rule, not {rule!r}")
    if rule == "bp":
        return Backprop(bp_updated_weights)
    return RULES[rule]()


class Trainer:
    """Trains a :class:`~pocketnn.nn.model.Sequential` with integers only.

    Every argument after the model is keyword-only.

    Parameters
    ----------
    model : the network; training starts from its current weights (all zero when fresh)
    rule : ``"dfa"`` (direct feedback alignment), ``"bp"`` (integer backprop) or a
        :class:`~pocketnn.train.rules.LearningRule` object
    lr_inv, lr_double_every, rounding, decay_inv, grad_bits, plateau : the optimizer's settings (see
        :class:`~pocketnn.train.optimizer.IntegerSGD`), used when ``optimizer`` is None
    optimizer : an optimizer object instead (its seed is the trainer's)
    batch_size : samples per step (the last batch of an epoch may be smaller)
    target_value : the one-hot target value
    loss : ``"l2"`` (the reference's; the error is ``y - target``) or ``"softmax"`` (integer
        softmax cross-entropy, :func:`~pocketnn.nn.losses.softmax_loss`)
    seed : source of the feedback matrices, the sample order and the rounding draws
    feedback : DFA matrices to use instead of random ones
    sample_order : epoch -> permutation, or a sequence of permutations (index epoch - 1)
    bp_updated_weights : for ``rule="bp"``, see :class:`~pocketnn.train.rules.Backprop`
    augment : integer data augmentation of every training batch
        (:class:`~pocketnn.train.augment.Augment`), drawn from the seed
    engine, overflow : run under this engine / overflow policy (default: the context in
        force when training runs, see :func:`pocketnn.configure`)

    Examples
    --------
    >>> from pocketnn import build_mlp, Trainer
    >>> model = build_mlp([784, 100, 50, 10])
    >>> trainer = Trainer(model, seed=1)
    >>> # trainer.fit(x_train, y_train, 1, x_test=x_test, y_test=y_test)
    """

    def __init__(
        self,
        model: Sequential,
        *,
        rule: str | LearningRule = "dfa",
        lr_inv: int = 1000,
        batch_size: int = 20,
        lr_double_every: int = 10,
        rounding: str = "trunc",
        decay_inv: int = 0,
        grad_bits: int = 0,
        plateau: tuple[int, int] | None = None,
        optimizer: IntegerSGD | None = None,
        target_value: int = TARGET_VALUE,
        loss: str = "l2",
        seed: int = 0,
        feedback: Sequence[np.ndarray] | None = None,
        sample_order: Callable[[int], np.ndarray] | Sequence[np.ndarray] | None = None,
        bp_updated_weights: bool = True,
        augment: Augment | None = None,
        engine: str | None = None,
        overflow: str | None = None,
    ) -> None:
        for label, value, low in (
            ("batch_size", batch_size, 1),
            ("seed", seed, 0),
            ("target_value", target_value, -INT32_MAX),  # the reference's targets are int32
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
        if target_value > INT32_MAX:
            raise ValueError(f"target_value must be at most {INT32_MAX}, got {target_value!r}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        self.loss = loss
        self.model = model
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.target_value = int(target_value)
        if optimizer is None:
            optimizer = IntegerSGD(
                lr_inv=lr_inv,
                lr_double_every=lr_double_every,
                rounding=rounding,
                decay_inv=decay_inv,
                seed=self.seed,
                grad_bits=grad_bits,
                plateau=plateau,
            )
        else:
            optimizer.seed = self.seed
        self.optimizer = optimizer
        self.rule = make_rule(rule, feedback, bp_updated_weights)
        self.rule.bind(model, self.seed)
        self.sample_order = sample_order
        self.augment = augment
        self.context: Context | None = None
        if engine is not None or overflow is not None:
            self.context = derive(current(), engine, overflow)
        self.epoch = 0  # epochs completed
        self.history: list[EpochResult] = []
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:  # a lock does not pickle: a copy gets its own
        return {key: value for key, value in vars(self).items() if key != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._lock = threading.RLock()

    # the optimizer's and the rule's settings, read where a flat view is handy (CLI, logs)
    @property
    def algorithm(self) -> str:
        return self.rule.name

    @property
    def lr_inv(self) -> int:
        return self.optimizer.lr_inv

    @property
    def lr_double_every(self) -> int:
        return self.optimizer.lr_double_every

    @property
    def rounding(self) -> str:
        return self.optimizer.rounding

    @property
    def feedback(self) -> list[np.ndarray]:
        return list(self.rule.arrays().values()) if isinstance(self.rule, DFA) else []

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

    @serialized
    def step(
        self,
        x: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        targets: np.ndarray | None = None,
        lr_inv: int | None = None,
    ) -> tuple[int, int]:
        """One training step on a batch; returns (summed loss, correct predictions) before it.

        Give ``labels`` (class indices, made one-hot with ``target_value``) or, for other
        integer targets, ``targets`` of the output's shape. If any check fails (an int32
        overflow), no parameter changes.
        """
        x = self.model.check_input(x)
        if (labels is None) == (targets is None):
            raise ValueError("step takes labels or targets (exactly one of them)")
        if targets is None:
            targets = one_hot(labels, self.model.n_classes, self.target_value)
        targets = np.asarray(targets)
        if targets.dtype.kind not in "iu" or targets.shape != (x.shape[0], self.model.n_classes):
            raise ValueError(
                f"targets must be integers of shape {(x.shape[0], self.model.n_classes)}, "
                f"got {targets.dtype} {targets.shape}"
            )
        lr_inv = self.optimizer.lr_inv_at(self.epoch + 1) if lr_inv is None else lr_inv
        with using(self.context):
            return self._step(x, targets, lr_inv)

    def _step(self, x: np.ndarray, targets: np.ndarray, lr_inv: int) -> tuple[int, int]:
        rng = self.optimizer.rounding_stream(self.epoch + 1)
        saved = None if rng is None else rng.bit_generator.state
        try:
            with self.model.lock.writing():  # readers see the weights before or after it
                kernel = accelerated_step() if self.loss == "l2" else None
                if kernel is not None:
                    result = kernel(self.model, self.rule, self.optimizer, x, targets, lr_inv, rng)
                    if result is not None:
                        return result
                return self._layered_step(x, targets, lr_inv, rng)
        except BaseException:
            if saved is not None:  # a failed step draws nothing either
                rng.bit_generator.state = saved
            raise

    def _layered_step(
        self, x: np.ndarray, targets: np.ndarray, lr_inv: int, rng: np.random.Generator | None
    ) -> tuple[int, int]:
        model, optimizer = self.model, self.optimizer
        outputs: list[np.ndarray] | None = [] if self.rule.needs_outputs else None
        output, caches = model.forward(x, outputs)
        loss, error = LOSSES[self.loss](output, targets)
        correct = int(np.count_nonzero(output.argmax(axis=1) == targets.argmax(axis=1)))
        pending: list[Update] = []

        def update(layer: Layer, cache: Any, delta: np.ndarray) -> Mapping[str, np.ndarray]:
            params = layer.parameters()
            updates = [
                optimizer.propose(layer.name, params[g.name], g, layer.weight_clamp, lr_inv, rng)
                for g in layer.gradient(delta, cache)
            ]
            pending.extend(updates)
            return NewParameters(params, updates)

        self.rule.backward(StepState(model, caches, error, targets, outputs), update)
        for u in pending:  # every check passed: now write
            u.commit()
        optimizer.committed()
        return loss, correct

    @serialized
    def train_epoch(
        self,
        x: np.ndarray,
        labels: np.ndarray,
        progress: Callable[[int, int], None] | None = None,
    ) -> EpochResult:
        """Train one epoch over ``(x, labels)``; ``progress(done, total)`` is called per step."""
        x = self.model.check_input(x)
        epoch = self.epoch + 1
        lr_inv = self.optimizer.lr_inv_at(epoch)
        targets = one_hot(labels, self.model.n_classes, self.target_value)
        order = self.order(epoch, x.shape[0])
        start = time.perf_counter()
        loss = correct = 0
        steps = -(-x.shape[0] // self.batch_size)
        augment_rng = stream(self.seed, STREAM_AUGMENT, epoch) if self.augment else None
        with using(self.context), single_thread_blas():
            covered = augment_rng is None and self.loss == "l2"
            kernel = accelerated_epoch() if covered else None
            if kernel is not None:  # the whole epoch in one call, where it is covered
                rng = self.optimizer.rounding_stream(epoch)
                with self.model.lock.writing():  # readers wait for the epoch's end
                    done = kernel(
                        self.model, self.rule, self.optimizer, x, targets, order,
                        self.batch_size, lr_inv, rng, progress,
                    )  # fmt: skip
                if done is not None:
                    loss, correct, steps = *done, 0
            for s in range(steps):
                idx = order[s * self.batch_size : (s + 1) * self.batch_size]
                batch = x[idx] if augment_rng is None else self.augment(x[idx], augment_rng)
                batch_loss, batch_correct = self._step(batch, targets[idx], lr_inv)
                loss += batch_loss
                correct += batch_correct
                if progress is not None:
                    progress(s + 1, steps)
        self.epoch = epoch
        return EpochResult(
            epoch, lr_inv, loss, correct, x.shape[0], None, None, time.perf_counter() - start
        )

    def score(self, x: np.ndarray, labels: np.ndarray) -> int:
        """How many samples of ``x`` the model classifies as their label."""
        with using(self.context):
            return self.model.count_correct(x, labels)

    def evaluate(self, x: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
        """``(correct, loss)`` on ``(x, labels)``: the samples classified as their label and
        the summed L2 loss against the one-hot targets, from one pass of the model."""
        with using(self.context):
            scores = self.model.scores(x)
        correct = int(np.count_nonzero(scores.argmax(axis=1) == np.asarray(labels)))
        targets = one_hot(labels, self.model.n_classes, self.target_value)
        loss, _ = LOSSES[self.loss](scores, targets)
        return correct, loss

    @serialized
    def fit(
        self,
        x: np.ndarray,
        labels: np.ndarray,
        epochs: int,
        *,
        x_test: np.ndarray | None = None,
        y_test: np.ndarray | None = None,
        x_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        early_stop: int = 0,
        on_epoch: Callable[[EpochResult], None] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[EpochResult]:
        """Train until ``epochs`` epochs are complete (counting any already done).

        After each epoch the validation and test sets, if given, are evaluated (accuracy
        and loss) and ``on_epoch`` is called (the place to save a checkpoint or write a log
        line). Everything decided during the run (the optimizer's plateau schedule,
        ``early_stop`` after that many epochs without a better validation score) is
        decided on validation, never on the test set. Returns the whole history.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
        if early_stop and x_val is None:
            raise ValueError("early_stop decides on a validation set: give x_val and y_val")
        while self.epoch < epochs and not self.stopped_early(early_stop):
            result = self.train_epoch(x, labels, progress)
            if x_val is not None and y_val is not None:
                result.val_correct, result.val_loss = self.evaluate(x_val, y_val)
                result.val_total = len(y_val)
                self.optimizer.end_epoch(result.epoch, result.val_correct)
            if x_test is not None and y_test is not None:
                result.test_correct, result.test_loss = self.evaluate(x_test, y_test)
                result.test_total = len(y_test)
            self.history.append(result)
            if on_epoch is not None:
                on_epoch(result)
        return self.history

    def stopped_early(self, patience: int) -> bool:
        """Whether the last ``patience`` epochs brought no better validation score."""
        scored = [r.val_correct for r in self.history if r.val_correct is not None]
        if not patience or len(scored) <= patience:
            return False
        return max(scored[-patience:]) <= max(scored[:-patience])

    def selected(self) -> EpochResult | None:
        """The epoch with the best validation score (the first of equals), if validated."""
        scored = [r for r in self.history if r.val_correct is not None]
        return max(scored, key=lambda r: r.val_correct) if scored else None

    @serialized
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Training state for a checkpoint: JSON-able settings and the rule's arrays."""
        settings = {
            "algorithm": self.rule.name,
            **self.optimizer.settings(),
            "batch_size": self.batch_size,
            "target_value": self.target_value,
            **({"loss": self.loss} if self.loss != "l2" else {}),
            "seed": self.seed,
            "bp_updated_weights": getattr(self.rule, "updated_weights", True),
            **self.rule.settings(),
            **({"augment": self.augment.settings()} if self.augment else {}),
            "epoch": self.epoch,
            "history": [vars(r) for r in self.history],
        }
        return settings, {**self.rule.arrays(), **self.optimizer.arrays()}

    @serialized
    def save(self, path: str | os.PathLike) -> None:
        """Save the model and everything needed to resume to the same bits, atomically."""
        from ..io.model_file import save  # the file format is not needed to train

        settings, arrays = self.state()
        save(path, self.model, training=settings, extra_arrays=arrays)

    @classmethod
    def from_state(
        cls,
        model: Sequential,
        settings: Mapping[str, Any],
        arrays: Mapping[str, np.ndarray],
        *,
        sample_order: Callable[[int], np.ndarray] | Sequence[np.ndarray] | None = None,
        engine: str | None = None,
        overflow: str | None = None,
    ) -> Trainer:
        """Rebuild a trainer from :meth:`state` so that training resumes to the same bits."""
        name = settings["algorithm"]
        if name not in RULES:
            raise ValueError(f"unknown rule {name!r} in the training state")
        kind = settings.get("optimizer", IntegerSGD.name)
        if kind not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {kind!r} in the training state")
        trainer = cls(
            model,
            rule=RULES[name].restore(settings, arrays),
            optimizer=OPTIMIZERS[kind].restore(settings, arrays, settings["seed"]),
            batch_size=settings["batch_size"],
            target_value=settings["target_value"],
            loss=settings.get("loss", "l2"),
            seed=settings["seed"],
            sample_order=sample_order,
            augment=Augment(
                **{**settings["augment"], "image_shape": tuple(settings["augment"]["image_shape"])}
            )
            if settings.get("augment")
            else None,
            engine=engine,
            overflow=overflow,
        )
        trainer.epoch = int(settings["epoch"])
        trainer.history = [EpochResult.from_record(r) for r in settings.get("history", [])]
        return trainer

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> Trainer:
        """Resume from a checkpoint written by :meth:`save` (keywords as :meth:`from_state`)."""
        from ..io.model_file import ModelFileError, load_checkpoint

        model, settings, arrays = load_checkpoint(path)
        if settings is None:
            raise ModelFileError(f"{path}: no training state to resume from")
        return cls.from_state(model, settings, arrays, **kwargs)
