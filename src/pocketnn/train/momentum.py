"""Integer SGD with heavy-ball momentum and a step size that decays linearly to zero.

For networks of fixed-point layers (``frac_bits``) trained by backprop, whose gradients
are the true gradients in the weights' own fine units, this is the optimizer of float
training written in integers::

    g     <- grad + param * lr_inv / decay_inv           (weight decay; none when decay_inv is 0)
    v     <- v - v / 2**momentum + g                     (truncating; beta = 1 - 2**-momentum)
    param <- clamp(param - round(v * (T - t) / (lr_inv * T)))

``t`` counts committed steps and ``T`` is the run's planned steps (``total_steps``; 0 keeps
the step constant), so the last epoch takes the smallest steps and the final weights are
the settled ones. Weight decay enters the gradient, as float SGD's L2 term does (PyTorch's
``weight_decay``): in the gradient's units it has the resolution a weight's own units lack
(``param / decay_inv`` would truncate to zero for every weight smaller than ``decay_inv``),
and it follows the momentum and the schedule; each step shrinks a weight by about
``param * 2**momentum / decay_inv`` times the schedule's factor.

The velocity is optimizer state: it is checkpointed, and a step that fails commits neither
parameters nor velocities.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core.arith import INT64_MAX, magnitude, trunc_div
from ..core.overflow import IntegerOverflowError
from ..engines import accelerated_ops
from ..nn.layers import Gradient
from .optimizer import IntegerSGD, Update, check_int


class MomentumSGD(IntegerSGD):
    """Integer SGD with momentum and a linear decay to zero (keywords of
    :class:`~pocketnn.train.optimizer.IntegerSGD`, plus):

    momentum : ``m``: the velocity keeps ``1 - 2**-m`` of itself each step (3: 0.875)
    total_steps : the planned number of steps over which the step size falls linearly to
        zero (0: constant); steps beyond it take the last step size
    """

    name = "momentum"

    def __init__(self, *, momentum: int = 3, total_steps: int = 0, **keywords: Any) -> None:
        super().__init__(**keywords)
        if self.grad_bits:
            raise ValueError("momentum works on the true gradient: grad_bits must be 0")
        self.momentum = check_int("momentum", momentum, 1, 30)
        self.total_steps = check_int("total_steps", total_steps, 0)
        self.steps_done = 0
        self.velocity: dict[str, np.ndarray] = {}

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "optimizer": self.name,
            "momentum": self.momentum,
            "total_steps": self.total_steps,
            "steps_done": self.steps_done,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"velocity/{key}": v for key, v in self.velocity.items()}

    @classmethod
    def restore(
        cls, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray], seed: int
    ) -> MomentumSGD:
        optimizer = cls(
            **cls.keywords(settings),
            momentum=settings["momentum"],
            total_steps=settings["total_steps"],
            seed=seed,
        )
        optimizer.steps_done = check_int("steps_done", settings["steps_done"], 0)
        prefix = "velocity/"
        for key, value in arrays.items():
            if key.startswith(prefix):
                value = np.asarray(value)
                if value.dtype != np.int64:
                    raise ValueError(f"{key}: a velocity must be int64, got {value.dtype}")
                optimizer.velocity[key[len(prefix) :]] = value.copy()
        return optimizer

    def committed(self) -> None:
        self.steps_done += 1

    def divisor(self, lr_inv: int, scale: int) -> int:
        """The divisor of this step's velocity: ``lr_inv * scale * T / (T - t)``."""
        base = lr_inv * scale
        if not self.total_steps:
            return base
        remaining = max(1, self.total_steps - self.steps_done)
        return -(-base * self.total_steps // remaining)

    def decay_term(self, layer: str, param: np.ndarray, units: int) -> np.ndarray:
        """``param * units / decay_inv`` (truncating), the decay in the gradient's units."""
        if magnitude(param) > INT64_MAX // units:
            raise IntegerOverflowError(f"{layer}: weight decay of a parameter beyond int64")
        return trunc_div(param.astype(np.int64) * units, self.decay_inv)

    def propose(
        self,
        layer: str,
        param: np.ndarray,
        grad: Gradient,
        weight_clamp: int,
        lr_inv: int,
        rng: np.random.Generator | None,
    ) -> Update:
        key = f"{layer}.{grad.name}"
        value = grad.value
        if grad.rows is not None:  # the velocity moves every row
            value = np.zeros(param.shape, dtype=np.int64)
            value[grad.rows] = grad.value
        velocity = self.velocity.get(key)
        if velocity is None or velocity.shape != param.shape:
            velocity = self.velocity[key] = np.zeros(param.shape, dtype=np.int64)
        if self.decay_inv:
            decay = self.decay_term(layer, param, lr_inv * grad.scale)
            if magnitude(value) > INT64_MAX - magnitude(decay):
                raise IntegerOverflowError(f"{layer}: gradient {grad.name} plus decay beyond int64")
            value = value + decay
        # |v - v / 2**m + g| <= |v| + |g|: refuse before anything could wrap
        if magnitude(velocity) > INT64_MAX - magnitude(value):
            raise IntegerOverflowError(f"{layer}: update {grad.name} velocity beyond int64")
        divisor = self.divisor(lr_inv, grad.scale)
        ops = accelerated_ops()
        if ops is not None and ops.takes_momentum(velocity, value, param):
            draws = None if rng is None else self.draws(rng, param.shape, divisor, np.int64)
            new_velocity, step = ops.momentum(
                velocity, value, param, draws, self.momentum, divisor, weight_clamp
            )
        else:
            new_velocity = velocity - trunc_div(velocity, 1 << self.momentum) + value
            step = new_velocity.copy()
            self.descend(param, step, divisor, weight_clamp, rng)
        keep = Update(layer, f"{grad.name} velocity", velocity, new_velocity)
        return Update(layer, grad.name, param, step, None, (keep,))
