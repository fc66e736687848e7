"""The bounds planner of on-device training for fixed-point MLPs (integer backprop, momentum,
softmax cross-entropy), proven for any weights within the clamps and any batch up to the
limit. No C text is written here.

The forward pass is :func:`~.cnn_planner.plan_stages`'s with ``training=True``. Backward,
the softmax error ``p - t`` is at most ``2**15`` in magnitude; a delta (the error divided by
gradient inverses ``g >= 1``) is never larger than its error; the error sent below is
``(delta @ W.T) / 2**f``. The gradient ``a.T @ delta`` sums at most ``max_batch`` products;
weight decay adds ``param * lr_inv / decay_inv`` with ``lr_inv <= INT32_MAX``. Every one of
these bounds must fit int64, where Python's exact products would otherwise refuse to run:
then nothing of Python's can raise during a step but the velocity's check
``|v| + |g| <= INT64_MAX``, which depends on the velocity and is checked in C at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...core.arith import INT32_MAX
from ...nn.layers import ActivationLayer, Dense, Flatten, Scale
from ...nn.losses import PROB_BITS
from ...nn.model import Sequential
from .cnn_planner import Stage, plan_stages
from .ctext import c_arith_type, c_type
from .planner import INT64_MAX
from .settings import ExportError

SOFTMAX_ERROR_BOUND = 1 << PROB_BITS
"""``|p - t|`` of the integer softmax loss: both are Q15 probabilities in ``[0, 2**15]``."""


@dataclass
class Schedule:
    """The optimizer the C bakes in: MomentumSGD's settings from the model file."""

    momentum: int  # the velocity keeps 1 - 2**-momentum of itself
    total_steps: int  # the linear schedule's planned steps (0: constant)
    steps_done: int  # steps already taken (the schedule's position)
    decay_inv: int  # weight decay in the gradient (0: none)
    max_batch: int


@dataclass
class BackwardPlan:
    """What the C of one dense stage's backward pass and update needs (types from bounds)."""

    stage: Stage
    err_bound: int  # |error at the stage's output| (and of its deltas)
    delta_type: str
    back_bound: int = 0  # |delta @ W.T| before the division by 2**f (0: first dense stage)
    back_type: str = "int32_t"  # its accumulator
    below_type: str = "int32_t"  # the error sent to the stage below, after the division
    grad_bound: int = 0  # |a.T @ delta| over a batch
    grad_type: str = "int32_t"
    product_type: str = "int32_t"  # one term a * delta
    bias_grad_bound: int = 0
    bias_grad_type: str = "int32_t"
    decay_bound: int = 0
    velocity: dict[str, np.ndarray] = field(default_factory=dict)  # initial, int64

    @property
    def ident(self) -> str:
        return self.stage.ident

    @property
    def layer(self) -> Dense:
        return self.stage.layer


def check_trainable(model: Sequential) -> None:
    """Refuse, in one line naming the layers, a model whose training is not exported:
    anything but fixed-point dense layers and activations (a leading input scaling and
    flatten allowed)."""
    other = sorted(
        {
            layer.type_name
            for layer in model.layers
            if not isinstance(layer, (Dense, ActivationLayer, Scale, Flatten))
        }
    )
    if other:
        raise ExportError(
            f"--with-training exports MLPs of Dense and Activation layers only; this model "
            f"has {', '.join(other)} layers: export it without --with-training (inference)"
        )
    first = next(i for i, layer in enumerate(model.layers) if isinstance(layer, Dense))
    scaled = [layer.name for layer in model.layers[first:] if isinstance(layer, Scale)]
    if scaled:
        raise ExportError(
            f"--with-training: scaling layers between dense layers ({', '.join(scaled)}) are "
            "not exported for training; export it without --with-training (inference)"
        )
    integer = [
        layer.name
        for layer in model.layers
        if isinstance(layer, Dense) and not layer.config.frac_bits
    ]
    if integer:
        raise ExportError(
            f"--with-training of layered models needs fixed-point dense layers (frac_bits > 0); "
            f"{', '.join(integer)} have none: export it without --with-training (inference)"
        )


def check_rule(training: Mapping[str, Any] | None) -> None:
    """Refuse a training state whose rule the C does not implement, naming the setting."""
    if training is None:
        raise ExportError(
            "--with-training of a fixed-point model needs its training state (optimizer, "
            "schedule, velocities): export a model file saved by pocketnn train or Trainer.save"
        )
    wanted = (  # key, value needed, what it is, what a file without the key means
        ("algorithm", "bp", "the rule", None),
        ("optimizer", "momentum", "the optimizer", "sgd"),
        ("loss", "softmax", "the loss", "l2"),
        ("bp_updated_weights", False, "bp_weights 'current' (textbook backprop)", True),
    )
    for key, value, what, default in wanted:
        got = training.get(key, default)
        if got != value:
            raise ExportError(
                f"--with-training of a fixed-point model exports integer backprop with "
                f"momentum and the softmax loss; this model's {key} is {got!r} (needs {what} "
                f"{value!r})"
            )
    target = training.get("target_value", 0)
    if isinstance(target, bool) or not isinstance(target, int) or target < 1:
        raise ExportError(
            f"--with-training: softmax targets need a positive target_value, got {target!r}"
        )


def plan_schedule(training: Mapping[str, Any], max_batch: int) -> Schedule:
    """The momentum settings of a checked training state."""
    schedule = Schedule(
        int(training["momentum"]),
        int(training["total_steps"]),
        int(training["steps_done"]),
        int(training.get("decay_inv", 0)),
        max_batch,
    )
    if INT32_MAX * schedule.total_steps + schedule.total_steps > INT64_MAX:
        raise ExportError(
            f"--with-training: total_steps {schedule.total_steps} is too many for the int64 "
            "step divisor lr_inv * total_steps"
        )
    return schedule


def _velocity(stage: Stage, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The stage's velocities from the file (``velocity/fc1.W``...), zero where absent."""
    out = {}
    for which in stage.arrays:
        shape = getattr(stage.layer, which).shape
        value = arrays.get(f"velocity/{stage.layer.name}.{which}")
        if value is None:
            value = np.zeros(shape, dtype=np.int64)
        value = np.asarray(value)
        if value.dtype != np.int64 or value.shape != shape:
            raise ExportError(
                f"{stage.layer.name}: velocity of {which} must be int64 of shape {shape}, got "
                f"{value.dtype} {value.shape}"
            )
        out[which] = value.reshape(-1) if which == "b" else value
    return out


def _fits(layer: str, what: str, bound: int, hint: str = "") -> int:
    if bound > INT64_MAX:
        raise ExportError(
            f"{layer}: {what} could reach {bound}, beyond int64, where Python raises "
            f"IntegerOverflowError{hint}"
        )
    return bound


def plan_fixed_training(
    model: Sequential, arrays: Mapping[str, np.ndarray], schedule: Schedule
) -> tuple[list[Stage], list[BackwardPlan]]:
    """The forward stages (for any weights within the clamps) and one
    :class:`BackwardPlan` per dense stage, last first."""
    stages = plan_stages(model, training=True)
    dense = [s for s in stages if s.kind == "dense"]
    if any(step.divisor for s in dense for step in s.steps):  # excluded by check_trainable
        raise ExportError("--with-training: scaling after a dense layer is not exported")
    plans: list[BackwardPlan] = []
    err = SOFTMAX_ERROR_BOUND
    smaller = " (a smaller --max-batch lowers it)"
    for k in range(len(dense) - 1, -1, -1):
        s = dense[k]
        name, clamp = s.layer.name, s.layer.weight_clamp
        a = s.in_values.magnitude
        plan = BackwardPlan(s, err, c_type(err), velocity=_velocity(s, arrays))
        plan.grad_bound = _fits(name, "a.T @ delta", schedule.max_batch * a * err, smaller)
        plan.grad_type = c_arith_type(plan.grad_bound)
        plan.product_type = c_arith_type(a * err)
        plan.bias_grad_bound = schedule.max_batch * err
        plan.bias_grad_type = c_arith_type(plan.bias_grad_bound)
        if schedule.decay_inv:
            plan.decay_bound = clamp * INT32_MAX // schedule.decay_inv
        _fits(
            name,
            "gradient plus decay",
            max(plan.grad_bound, plan.bias_grad_bound) + plan.decay_bound,
        )
        if k:
            plan.back_bound = _fits(name, "delta @ W.T", s.layer.n_out * err * clamp)
            plan.back_type = c_arith_type(plan.back_bound)
            err = plan.back_bound >> s.frac_bits
            plan.below_type = c_arith_type(err)
        plans.append(plan)
    return stages, plans
