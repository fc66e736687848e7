"""The bounds planner: every integer width of the generated code, proven from bounds.

:func:`plan_layers` bounds each value the C computes (``z``, the errors, deltas and
gradients) on the model and the export settings, and picks the smallest type that holds
it, or int64 with a run-time int32 check where Python would raise. The result, one
:class:`LayerPlan` per layer, is all the templates need; no C text is written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...nn.inputs import INPUT_TYPES
from ...nn.layers import Dense
from .activations import ACTIVATIONS, exportable
from .ctext import INT32_MAX, INT32_MIN, c_arith_type, c_type, is_c_identifier
from .settings import DEFAULT_MAX_BATCH, DEFAULT_TARGET_VALUE, ExportError

if TYPE_CHECKING:
    from ...nn.model import Sequential

INT64_MAX = 2**63 - 1
INPUT_MAX = INPUT_TYPES["uint8"][1]
"""The largest input of a model without an input record: bytes, ``uint8_t`` 0..255."""


@dataclass
class LayerPlan:
    """Everything the generator decided about one layer (types come from proven bounds)."""

    index: int
    ident: str  # C identifier part, e.g. "fc1"
    n_in: int
    n_out: int
    activation: str
    W: np.ndarray
    b: np.ndarray
    clamp: int
    param_type: str
    in_type: str
    in_bound: int
    out_type: str
    z_bound: int
    product_type: str
    acc_type: str
    z_check: bool
    # training only
    feedback: np.ndarray | None = None
    g_type: str = "int32_t"
    err_bound: int = 0
    err_type: str = "int32_t"
    err_check: bool = False
    delta_bound: int = 0
    delta_type: str = "int32_t"
    grad_bound: int = 0
    grad_type: str = "int32_t"
    grad_product_type: str = "int32_t"
    bias_grad_bound: int = 0
    bias_grad_type: str = "int32_t"
    new_type: str = "int32_t"

    @property
    def upper(self) -> str:
        return self.ident.upper()

    @property
    def grad_check(self) -> bool:
        return self.grad_bound > INT32_MAX or self.bias_grad_bound > INT32_MAX


def _layer_ident(name: str, index: int) -> str:
    return name if is_c_identifier(name) else f"layer{index + 1}"


def plan_layers(
    model: Sequential,
    with_training: bool,
    feedback: Sequence[np.ndarray] | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    target_value: int = DEFAULT_TARGET_VALUE,
    input_type: str = "uint8",
) -> list[LayerPlan]:
    """Choose every integer type of the generated code from bounds proven on the model.

    Inference-only code bounds ``|z|`` with the actual constant weights; training code must
    hold for any weights within the clamp, and for any batch of up to ``max_batch`` samples.
    Both hold for every value of ``input_type`` (a key of ``INPUT_TYPES``), the C's input.
    """
    plans: list[LayerPlan] = []
    low, high = INPUT_TYPES[input_type]
    in_bound, in_type = max(-low, high), f"{input_type}_t"
    n_layers = len(model.layers)
    for i, layer in enumerate(model.layers):
        if not isinstance(layer, Dense):
            raise ExportError(
                f"{layer.name}: {type(layer).__name__} layers are not supported by export-c "
                "(dense layers only)"
            )
        spec = exportable(layer.name, layer.activation)
        W = np.asarray(layer.W, dtype=np.int64)
        b = np.asarray(layer.b, dtype=np.int64).reshape(-1)
        if with_training:
            w_max = layer.weight_clamp
            z_bound = in_bound * layer.n_in * w_max + w_max
        else:
            w_max = int(np.abs(W).max(initial=0))
            z_bound = int((in_bound * np.abs(W).sum(axis=0) + np.abs(b)).max())
        if z_bound > INT64_MAX:
            raise ExportError(f"{layer.name}: |z| could reach {z_bound}, beyond int64")
        last = i == n_layers - 1
        plans.append(
            LayerPlan(
                index=i,
                ident=_layer_ident(layer.name, i),
                n_in=layer.n_in,
                n_out=layer.n_out,
                activation=layer.activation_name,
                W=W,
                b=b,
                clamp=layer.weight_clamp,
                param_type=c_type(layer.weight_clamp),
                in_type=in_type,
                in_bound=in_bound,
                out_type="int32_t" if last else c_type(spec.out_bound),
                z_bound=z_bound,
                product_type=c_arith_type(in_bound * w_max),
                acc_type=c_arith_type(z_bound),
                z_check=z_bound > INT32_MAX,
            )
        )
        in_bound, in_type = spec.out_bound, plans[-1].out_type
    if with_training:
        _plan_training(plans, feedback, max_batch, target_value)
    return plans


def _plan_training(
    plans: list[LayerPlan],
    feedback: Sequence[np.ndarray] | None,
    max_batch: int,
    target_value: int,
) -> None:
    n_classes = plans[-1].n_out
    hidden = plans[:-1]
    if feedback is None or len(feedback) != len(hidden):
        got = "none" if feedback is None else str(len(feedback))
        raise ExportError(f"DFA training needs {len(hidden)} feedback matrices, got {got}")
    # e = y_hat - target: |e| <= |y_hat| + |target|
    e_bound = ACTIVATIONS[plans[-1].activation].out_bound + abs(target_value)
    for plan, B in zip(hidden, feedback):
        B = np.asarray(B)
        if B.dtype.kind not in "iu" or B.shape != (n_classes, plan.n_out):
            raise ExportError(
                f"{plan.ident}: feedback must be an integer array of shape "
                f"{(n_classes, plan.n_out)}, got {B.dtype} {B.shape}"
            )
        if B.size and (B.min() < INT32_MIN or B.max() > INT32_MAX):
            raise ExportError(f"{plan.ident}: feedback values must fit int32")
        plan.feedback = B.astype(np.int64)
        plan.err_bound = e_bound * int(np.abs(plan.feedback).sum(axis=0).max(initial=0))
        plan.err_type = c_arith_type(plan.err_bound)
        plan.err_check = plan.err_bound > INT32_MAX
        # a checked error fits int32; dividing by g >= 1 keeps it there
        plan.delta_bound = -INT32_MIN if plan.err_check else plan.err_bound
        plan.delta_type = "int32_t" if plan.err_check else c_type(plan.err_bound)
    plans[-1].delta_bound = e_bound
    plans[-1].delta_type = c_type(e_bound)
    for plan in plans:
        plan.g_type = c_type(ACTIVATIONS[plan.activation].g_max)
        plan.grad_bound = max_batch * plan.in_bound * plan.delta_bound
        plan.bias_grad_bound = max_batch * plan.delta_bound
        if plan.grad_bound > INT64_MAX:
            raise ExportError(
                f"{plan.ident}: |a| <= {plan.in_bound} times |delta| <= {plan.delta_bound}, "
                f"summed over a batch of {max_batch}, could overflow int64; on-device training "
                "needs bounded activations (e.g. pocket_tanh) in hidden layers, or a smaller "
                "max batch"
            )
        plan.grad_type = c_arith_type(plan.grad_bound)
        plan.grad_product_type = c_arith_type(plan.in_bound * plan.delta_bound)
        plan.bias_grad_type = c_arith_type(plan.bias_grad_bound)
        step_bound = min(max(plan.grad_bound, plan.bias_grad_bound), -INT32_MIN)
        plan.new_type = c_arith_type(plan.clamp + step_bound)
