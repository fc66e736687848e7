"""The integer optimizer: ``param <- clamp(param - round(grad / lr_inv) - param / decay_inv)``.

It owns everything about turning a gradient into new parameter values: the learning-rate
inverse and its schedule, the rounding of the division (truncating as the reference, or
stochastic), the clamp each layer declares, and an optional integer weight decay. It never
writes a parameter: :meth:`IntegerSGD.propose` returns new values, and the trainer commits
all of a step's values at once, only if every check of the step passed.

Subclass it to change the rule (e.g. another schedule: override :meth:`lr_inv_at`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.arith import (
    INT32_EXACT,
    INT32_MAX,
    clamp,
    magnitude,
    stochastic_div_,
    trunc_div_scalar_,
)
from ..nn.layers import Gradient
from .seeding import STREAM_ROUNDING, stream

ROUNDINGS = ("trunc", "stochastic")


@dataclass
class Update:
    """New values for the rows ``rows`` (None: all) of parameter ``name`` of a layer.

    ``target`` is the live parameter array the values are committed into.
    """

    layer: str
    name: str
    target: np.ndarray
    values: np.ndarray
    rows: np.ndarray | None = None
    companions: tuple[Update, ...] = ()  # optimizer state written with it (e.g. velocity)

    def commit(self) -> None:
        if self.rows is None:
            self.target[...] = self.values
        else:
            self.target[self.rows] = self.values
        for other in self.companions:
            other.commit()


def check_int(label: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{label} must be at most {high}, got {value!r}")
    return int(value)


class IntegerSGD:
    """Integer stochastic gradient descent.

    Parameters
    ----------
    lr_inv : learning-rate inverse; every update divides the batch-summed gradient by it
    lr_double_every : the reference schedule: ``lr_inv`` doubles at every epoch divisible
        by this (0: never)
    rounding : ``"trunc"`` (toward zero, as the reference) or ``"stochastic"`` (up or down
        at random with the probabilities that make the division unbiased, so updates
        smaller than ``lr_inv`` are kept on average)
    decay_inv : integer weight decay ``param -= param / decay_inv`` (truncating) at every
        step; 0 turns it off
    seed : source of the stochastic-rounding draws (one stream per epoch)
    grad_bits : 0 (off), or normalise each parameter's gradient per step: divide it by the
        power of two that brings its largest magnitude below ``2**grad_bits`` (as part of the
        one rounded division), so the largest step of every parameter is about
        ``2**grad_bits / lr_inv`` whatever the size of its sums.
        Networks with scaling layers (whose errors are themselves normalised) train with it;
        it replaces the gradient's own ``scale``.
    plateau : ``(patience, factor)``: multiply ``lr_inv`` by ``factor`` whenever the
        validation score has not improved for ``patience`` epochs (decided in
        :meth:`end_epoch`, from validation only); None: no plateau schedule
    """

    def __init__(
        self,
        *,
        lr_inv: int = 1000,
        lr_double_every: int = 10,
        rounding: str = "trunc",
        decay_inv: int = 0,
        seed: int = 0,
        grad_bits: int = 0,
        plateau: tuple[int, int] | list[int] | None = None,
    ) -> None:
        if rounding not in ROUNDINGS:
            raise ValueError(f"unknown rounding {rounding!r}; choose one of {', '.join(ROUNDINGS)}")
        # the reference's lrInv is a 32-bit int
        self.lr_inv = check_int("lr_inv", lr_inv, 1, INT32_MAX)
        self.lr_double_every = check_int("lr_double_every", lr_double_every, 0)
        self.decay_inv = check_int("decay_inv", decay_inv, 0, INT32_MAX)
        self.seed = check_int("seed", seed, 0)
        self.rounding = rounding
        self.grad_bits = check_int("grad_bits", grad_bits, 0, 62)
        self.plateau: tuple[int, int] | None = None
        if plateau is not None:
            patience, factor = plateau
            self.plateau = (
                check_int("plateau patience", patience, 1),
                check_int("plateau factor", factor, 2),
            )
        # what the plateau schedule has seen: the best validation score, epochs since, boosts
        self.schedule_state: dict[str, int] = {"best": -1, "since": 0, "boosts": 0}
        self._rng: np.random.Generator | None = None
        self._rng_epoch = 0

    def settings(self) -> dict[str, int | str]:
        """The JSON-able settings, as stored in a checkpoint."""
        return {
            "lr_inv": self.lr_inv,
            "lr_double_every": self.lr_double_every,
            "rounding": self.rounding,
            "decay_inv": self.decay_inv,
            **({"grad_bits": self.grad_bits} if self.grad_bits else {}),
            **(
                {"plateau": list(self.plateau), "schedule_state": dict(self.schedule_state)}
                if self.plateau
                else {}
            ),
        }

    name = "sgd"

    def arrays(self) -> dict[str, np.ndarray]:
        """Integer state arrays stored in a checkpoint (none for plain SGD)."""
        return {}

    @classmethod
    def restore(
        cls, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray], seed: int
    ) -> IntegerSGD:
        """The optimizer :meth:`settings` and :meth:`arrays` describe."""
        optimizer = cls(**cls.keywords(settings), seed=seed)
        if "schedule_state" in settings:
            optimizer.schedule_state = dict(settings["schedule_state"])
        return optimizer

    @staticmethod
    def keywords(settings: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor keywords stored in ``settings`` (older checkpoints lack some)."""
        return {
            "lr_inv": settings["lr_inv"],
            "lr_double_every": settings["lr_double_every"],
            "rounding": settings.get("rounding", "trunc"),
            "decay_inv": settings.get("decay_inv", 0),
            "grad_bits": settings.get("grad_bits", 0),
            "plateau": settings.get("plateau"),
        }

    def committed(self) -> None:  # noqa: B027 - optional hook
        """Called once after every committed step (a subclass counts steps here)."""

    def end_epoch(self, epoch: int, val_correct: int) -> None:
        """Feed the plateau schedule an epoch's validation score."""
        if self.plateau is None:
            return
        state = self.schedule_state
        if val_correct > state["best"]:
            state["best"], state["since"] = val_correct, 0
            return
        state["since"] += 1
        if state["since"] >= self.plateau[0]:
            state["boosts"] += 1
            state["since"] = 0

    def lr_inv_at(self, epoch: int) -> int:
        """``lr_inv`` of a 1-based epoch: doubled at each epoch divisible by ``lr_double_every``.

        It saturates at INT32_MAX, the largest value the reference's 32-bit ``lrInv`` holds
        (by then every truncated update of an int32 gradient is already zero).
        """
        lr_inv = self.lr_inv
        if self.plateau is not None:
            lr_inv *= self.plateau[1] ** self.schedule_state["boosts"]
        if self.lr_double_every > 0:
            lr_inv <<= epoch // self.lr_double_every
        return min(lr_inv, INT32_MAX)

    def rounding_stream(self, epoch: int) -> np.random.Generator | None:
        """The stochastic-rounding stream of an epoch (None when rounding truncates).

        One stream per epoch, seeded by ``[seed, stream, epoch]``, so a resumed run draws
        exactly what an uninterrupted one would.
        """
        if self.rounding == "trunc":
            return None
        if self._rng is None or self._rng_epoch != epoch:
            self._rng = stream(self.seed, STREAM_ROUNDING, epoch)
            self._rng_epoch = epoch
        return self._rng

    @staticmethod
    def update_dtype(weight_clamp: int, lr_inv: int) -> type:
        """The integer type an update runs in: int32 when its bounds allow, else int64.

        The guarded gradient fits int32, so ``|param - round(grad / lr_inv)|`` is at most
        ``weight_clamp + 2**31 / lr_inv + 1``; when that fits int32 too, so does every step.
        """
        narrow = lr_inv <= INT32_MAX and weight_clamp + INT32_EXACT // lr_inv + 1 <= INT32_MAX
        return np.int32 if narrow else np.int64

    @staticmethod
    def draws(
        rng: np.random.Generator, shape: tuple[int, ...], lr_inv: int, dtype: type
    ) -> np.ndarray:
        """The rounding draws of one parameter update: uniform in ``[0, lr_inv)``.

        The one place draws are made, so every engine consumes the stream identically.
        """
        return rng.integers(0, lr_inv, size=shape, dtype=dtype)

    def propose(
        self,
        layer: str,
        param: np.ndarray,
        grad: Gradient,
        weight_clamp: int,
        lr_inv: int,
        rng: np.random.Generator | None,
    ) -> Update:
        """New values of ``param`` (rows ``grad.rows``) after one step; ``param`` unchanged."""
        if self.grad_bits:
            peak = magnitude(grad.value)
            divisor = lr_inv << max(0, peak.bit_length() - self.grad_bits)
        else:
            divisor = lr_inv * grad.scale
        # the decay term is at most the clamp: widen the bound by it when decay is on
        bound = weight_clamp * (2 if self.decay_inv else 1)
        dtype = self.update_dtype(bound, divisor) if grad.int32 else np.int64
        rows = grad.rows
        if self.decay_inv and rows is not None:  # decay moves every row, not just active ones
            full = np.zeros((param.shape[0],) + grad.value.shape[1:], dtype=grad.value.dtype)
            full[rows] = grad.value
            grad, rows = Gradient(grad.name, full, None, grad.scale, grad.int32), None
        step = grad.value.astype(dtype) if dtype != grad.value.dtype else grad.value
        current = param if rows is None else param[rows]
        self.descend(current, step, divisor, weight_clamp, rng, self.decay_inv)
        return Update(layer, grad.name, param, step, rows)

    def descend(
        self,
        current: np.ndarray,
        step: np.ndarray,
        divisor: int,
        weight_clamp: int,
        rng: np.random.Generator | None,
        decay_inv: int = 0,
    ) -> np.ndarray:
        """Turn ``step`` in place into ``clamp(current - round(step / divisor) - decay)``,
        the decay being ``current / decay_inv`` (truncating; none when 0)."""
        if rng is None:
            trunc_div_scalar_(step, divisor)
        else:
            stochastic_div_(step, divisor, self.draws(rng, step.shape, divisor, step.dtype))
        if decay_inv:
            decay = current.astype(step.dtype)
            trunc_div_scalar_(decay, decay_inv)
            step += decay
        np.subtract(current, step, out=step)
        return clamp(step, -weight_clamp, weight_clamp)
