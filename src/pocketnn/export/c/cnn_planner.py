"""The bounds planner of layered models (convolutions, pooling, scaling, dense layers).

:func:`plan_stages` cuts a model into *stages*: one layer that reads a whole tensor (a
convolution, a dense layer, a pooling layer) followed by the element-wise layers after it
(a dense layer's own activation, :class:`~pocketnn.nn.layers.Scale`,
:class:`~pocketnn.nn.layers.ActivationLayer`). The C applies those to each value as it is
stored, so no stage ever keeps a wide tensor of sums: a convolution's int32 sum becomes an
int8 value before it is written. Flatten costs nothing (values are kept in (c, y, x) order).

Every value is tracked as a proven :class:`Interval`, computed from the actual constant
weights, which gives each stage's accumulator type and each stored tensor's narrowest type.
Intervals always contain 0, which makes the bound of a sum also bound every partial sum
(each term lies between its own minimum <= 0 and maximum >= 0), in any order, padding
zeros included. No C text is written here.

Fixed-point layers (``frac_bits`` f > 0, usually without bias) divide their sum by ``2**f``,
truncating, before anything else: the stage's value is then that quotient, computed from
the sum in its proven accumulator type, and must fit int32 (the weight clamps of
:func:`~pocketnn.nn.architecture.build` prove it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ...core.arith import trunc_div
from ...nn.activations import Activation
from ...nn.layers import (
    ActivationLayer,
    AvgPool2D,
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    Scale,
)
from .activations import exportable
from .ctext import INT32_MAX, INT32_MIN, c_arith_type, c_type, c_type_size, is_c_identifier
from .planner import INPUT_MAX, INT64_MAX
from .settings import ExportError

if TYPE_CHECKING:
    from ...nn.model import Sequential

ENUMERATE_LIMIT = 1 << 18
"""An activation's output range is computed exactly, input by input, up to this many inputs;
beyond, its proven output bound is used."""

IDENTITY = "as_is"
"""The identity activation (a linear dense layer's): it needs no C at all."""

STORAGE_TYPES = (
    ("int8_t", -(2**7), 2**7 - 1),
    ("uint8_t", 0, 2**8 - 1),
    ("int16_t", -(2**15), 2**15 - 1),
    ("uint16_t", 0, 2**16 - 1),
    ("int32_t", INT32_MIN, INT32_MAX),
)
"""Types a tensor can be stored in, narrowest first. Every stored value fits int32: sums are
int32-checked (as Python's guard does), and nothing after a sum widens it."""


@dataclass(frozen=True)
class Interval:
    """A proven range ``[lo, hi]`` of integer values; always contains 0."""

    lo: int
    hi: int

    @classmethod
    def around_zero(cls, lo: int, hi: int) -> Interval:
        return cls(min(int(lo), 0), max(int(hi), 0))

    @property
    def magnitude(self) -> int:
        return max(-self.lo, self.hi)

    def within_int32(self) -> Interval:
        return Interval(max(self.lo, INT32_MIN), min(self.hi, INT32_MAX))

    def __str__(self) -> str:
        return f"[{self.lo}, {self.hi}]"


def storage_type(values: Interval) -> str:
    """The narrowest C type holding every value of ``values`` (which must fit int32)."""
    for name, lo, hi in STORAGE_TYPES:
        if lo <= values.lo and values.hi <= hi:
            return name
    raise ExportError(f"values in {values} do not fit int32")  # excluded by the planner


def linear_interval(W: np.ndarray, b: np.ndarray, x: Interval) -> Interval:
    """The range of ``x @ W + b`` (and of every partial sum) for inputs within ``x``."""
    W = np.asarray(W, dtype=np.int64)
    positive = np.where(W > 0, W, 0).sum(axis=0)
    negative = np.where(W < 0, W, 0).sum(axis=0)
    lo, hi = 0, 0
    for bias, pos, neg in zip(b.reshape(-1).tolist(), positive.tolist(), negative.tolist()):
        lo = min(lo, bias + x.lo * pos + x.hi * neg)
        hi = max(hi, bias + x.hi * pos + x.lo * neg)
    return Interval(lo, hi)


def activation_interval(activation: Activation, fan_in: int, x: Interval) -> Interval:
    """The range of ``activation`` over ``x``: exact when ``x`` is small enough to try every
    input, or the activation is a clipped table lookup; else its proven output bound (the
    C function returns an int32)."""
    if x.hi - x.lo < ENUMERATE_LIMIT:
        y = activation(np.arange(x.lo, x.hi + 1, dtype=np.int64), fan_in)[0]
    elif (table := activation.table) is not None:
        ends = np.array([x.lo, x.hi], dtype=np.int64)
        first, last = np.clip(trunc_div(ends, table.divisor(fan_in)), table.low, table.high)
        y = table.y[first - table.low : last - table.low + 1]
    else:
        return Interval(-activation.out_bound, activation.out_bound).within_int32()
    return Interval.around_zero(int(y.min()), int(y.max()))


@dataclass
class Step:
    """One element-wise operation a stage applies to each value before storing it."""

    layer: str  # the model layer's name, for comments
    ident: str  # C name part (an activation's per-layer macros)
    out: Interval
    divisor: int = 0  # Scale: y = clamp(z / divisor, -bound, bound)
    bound: int = 0
    activation: str = ""  # activation: y = f(z, fan_in)
    fan_in: int = 1


@dataclass
class Stage:
    """One C function of the forward pass: a layer reading a tensor, then element-wise steps.

    ``kind`` is ``conv``, ``dense``, ``maxpool``, ``avgpool`` or ``copy`` (element-wise
    layers on the input itself). ``z`` is the range of the value the steps start from (a
    sum, a fixed-point sum's quotient by ``2**frac_bits``, a pooled value or an input
    value); ``acc_type`` is the type the sum is computed in, and ``z_check`` says it may
    leave int32, where the C checks and Python raises.
    """

    index: int
    kind: str
    ident: str
    layers: list[str]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    in_type: str
    in_values: Interval
    z: Interval
    acc_type: str = "int32_t"
    z_check: bool = False
    z_bound: int = 0  # the largest |sum| (before the int32 check)
    frac_bits: int = 0  # the sum is divided by 2**frac_bits (truncating) first
    bias: bool = True  # False: no bias array, the sum starts from 0
    steps: list[Step] = field(default_factory=list)
    out_type: str = "int32_t"
    layer: Conv2D | Dense | MaxPool2D | AvgPool2D | None = None
    param_type: str = ""

    @property
    def upper(self) -> str:
        return self.ident.upper()

    @property
    def out_values(self) -> Interval:
        return self.steps[-1].out if self.steps else self.z

    @property
    def n_in(self) -> int:
        return math.prod(self.in_shape)

    @property
    def n_out(self) -> int:
        return math.prod(self.out_shape)

    @property
    def has_params(self) -> bool:
        return self.kind in ("conv", "dense")

    @property
    def arrays(self) -> tuple[str, ...]:
        """The parameter arrays the C stores: ``W``, and ``b`` unless the layer has none."""
        if not self.has_params:
            return ()
        return ("W", "b") if self.bias else ("W",)

    @property
    def macs(self) -> int:
        """Multiply-accumulates per input, counting the padded positions (skipped in C)."""
        return self.layer.W.size * (self.n_out // self.layer.W.shape[1]) if self.has_params else 0


class _Idents:
    """Unique C identifiers from layer names (``conv1.act`` -> ``conv1_act``)."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def __call__(self, name: str, index: int) -> str:
        ident = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
        if not ident.isascii() or not is_c_identifier(ident) or ident.upper() in self.taken:
            ident, n = f"layer{index + 1}", 1
            while ident.upper() in self.taken:
                n += 1
                ident = f"layer{index + 1}_{n}"
        self.taken.add(ident.upper())
        return ident


def is_fixed_point(layer: Conv2D | Dense) -> bool:
    """Whether a linear layer divides its sums by ``2**frac_bits`` or has no bias."""
    return bool(layer.config.frac_bits) or not layer.config.bias


def is_layered(model: Sequential) -> bool:
    """Whether the model needs the layered exporter: anything but dense layers, or
    fixed-point dense layers (the MLP exporter's C, training included, has a bias and no
    fractional bits)."""
    return not all(isinstance(layer, Dense) and not is_fixed_point(layer) for layer in model.layers)


def _params(layer: Conv2D | Dense) -> tuple[np.ndarray, np.ndarray, str]:
    W = np.asarray(layer.W, dtype=np.int64)
    b = np.asarray(layer.b, dtype=np.int64).reshape(-1)
    largest = max(int(np.abs(W).max(initial=0)), int(np.abs(b).max(initial=0)))
    return W, b, c_type(largest)


def clamp_interval(layer: Conv2D | Dense, x: Interval) -> Interval:
    """The range of a layer's sums (and every partial sum) for *any* weights within its
    clamp (training changes them) and inputs within ``x``."""
    c = layer.weight_clamp
    bound = layer.W.shape[0] * x.magnitude * c + (c if layer.config.bias else 0)
    return Interval(-bound, bound)


def _quotient(x: Interval, divisor: int) -> Interval:
    """The range of ``v / divisor`` (truncating, monotone in ``v``) for ``v`` in ``x``."""
    q = trunc_div(np.array([x.lo, x.hi], dtype=np.int64), divisor)
    return Interval(int(q[0]), int(q[1]))


def _sum_stage(stage: Stage, layer: Conv2D | Dense, training: bool) -> None:
    """The accumulator of a convolution or dense stage, from its weights' interval (with
    ``training``, that of any weights within the clamp).

    Python checks the sums of a convolution, and of a dense layer without fractional bits,
    against int32 (where they may leave it, the C checks too); a fixed-point dense layer's
    sum is exact in int64 and only its quotient must be an int32.
    """
    W, b, stage.param_type = _params(layer)
    stage.frac_bits, stage.bias = int(layer.config.frac_bits), bool(layer.config.bias)
    if training:
        stage.param_type = c_type(layer.weight_clamp)
        z, w_max = clamp_interval(layer, stage.in_values), layer.weight_clamp
    else:
        z, w_max = linear_interval(W, b, stage.in_values), int(np.abs(W).max(initial=0))
    if z.magnitude > INT64_MAX:
        raise ExportError(f"{layer.name}: |z| could reach {z.magnitude}, beyond int64")
    product_bound = stage.in_values.magnitude * w_max * W.shape[0]
    if product_bound > INT64_MAX:  # Python refuses such a product (exact_matmul)
        raise ExportError(
            f"{layer.name}: |in| * |W| * n_in could reach {product_bound}, beyond int64, "
            "where Python raises IntegerOverflowError"
        )
    stage.z_bound = z.magnitude
    stage.acc_type = c_arith_type(z.magnitude)
    int32_guarded = isinstance(layer, Conv2D) or not stage.frac_bits
    stage.z_check = int32_guarded and z.magnitude > INT32_MAX
    if int32_guarded:
        z = z.within_int32()  # a sum that left int32 has returned NAME_ERR_OVERFLOW
    if stage.frac_bits:
        z = _quotient(z, 1 << stage.frac_bits)
        if z.magnitude > INT32_MAX:
            raise ExportError(
                f"{layer.name}: z / 2**{stage.frac_bits} could reach {z}, beyond int32"
            )
    stage.z = z


def _scale_step(layer: Scale, ident: str, x: Interval) -> Step:
    cfg = layer.config

    def scaled(v: int) -> int:
        q = abs(v) // cfg.divisor
        return max(-cfg.bound, min(cfg.bound, q if v >= 0 else -q))

    out = Interval.around_zero(scaled(x.lo), scaled(x.hi))  # monotone in v
    return Step(layer.name, ident, out, divisor=cfg.divisor, bound=cfg.bound)


def _activation_steps(
    layer_name: str, ident: str, activation: Activation, fan_in: int, x: Interval
) -> list[Step]:
    exportable(layer_name, activation)
    if activation.name == IDENTITY:
        return []
    out = activation_interval(activation, fan_in, x)
    return [Step(layer_name, ident, out, activation=activation.name, fan_in=fan_in)]


def plan_stages(model: Sequential, training: bool = False) -> list[Stage]:
    """Cut ``model`` into stages and choose every integer type from proven intervals.

    Inputs are bytes (``0..INPUT_MAX``); the weights are the model's actual constants, or
    with ``training`` any weights within each layer's clamp.
    """
    idents = _Idents()
    stages: list[Stage] = []
    values, value_type = Interval(0, INPUT_MAX), "uint8_t"

    def new_stage(kind: str, layer, index: int) -> Stage:
        nonlocal values, value_type
        if stages:
            values, value_type = stages[-1].out_values, storage_type(stages[-1].out_values)
            stages[-1].out_type = value_type
        stage = Stage(
            index=len(stages),
            kind=kind,
            ident=idents(layer.name, index),
            layers=[layer.name],
            in_shape=layer.input_shape,
            out_shape=layer.output_shape,
            in_type=value_type,
            in_values=values,
            z=values,
            layer=layer if kind != "copy" else None,
        )
        stages.append(stage)
        return stage

    for i, layer in enumerate(model.layers):
        if isinstance(layer, Flatten):
            if stages:
                stages[-1].layers.append(layer.name)
                stages[-1].out_shape = layer.output_shape
        elif isinstance(layer, (Scale, ActivationLayer)):
            if not stages:  # element-wise layers on the input: a stage of their own
                new_stage("copy", layer, i).layers.clear()
            stage = stages[-1]
            stage.layers.append(layer.name)
            stage.out_shape = layer.output_shape
            x, ident = stage.out_values, idents(layer.name, i)
            if isinstance(layer, Scale):
                stage.steps.append(_scale_step(layer, ident, x))
            else:
                fan_in = layer.config.fan_in
                stage.steps += _activation_steps(layer.name, ident, layer.function, fan_in, x)
        elif isinstance(layer, (Conv2D, Dense)):
            stage = new_stage("conv" if isinstance(layer, Conv2D) else "dense", layer, i)
            _sum_stage(stage, layer, training)
            if isinstance(layer, Dense):
                stage.steps += _activation_steps(
                    layer.name, stage.ident, layer.activation, layer.n_in, stage.z
                )
        elif isinstance(layer, (MaxPool2D, AvgPool2D)):
            stage = new_stage("maxpool" if isinstance(layer, MaxPool2D) else "avgpool", layer, i)
            stage.acc_type = c_arith_type(layer.config.size**2 * stage.z.magnitude)
        else:
            raise ExportError(
                f"{layer.name}: {type(layer).__name__} layers are not supported by export-c "
                "(Dense, Conv2D, MaxPool2D, AvgPool2D, Flatten, Scale and Activation layers)"
            )
    if not stages:  # only flatten layers: the scores are the input itself
        new_stage("copy", model.layers[0], 0).out_shape = model.layers[-1].output_shape
    stages[-1].out_type = "int32_t"  # the scores
    return stages


@dataclass
class BufferPlan:
    """The two ping-pong buffers: stage k writes buffer k % 2 (the last writes the scores).

    ``members[i]`` maps each C type written into buffer ``i`` to the largest element count.
    """

    members: list[dict[str, int]]

    @property
    def sizes(self) -> list[int]:
        return [
            max((count * c_type_size(t) for t, count in m.items()), default=0) for m in self.members
        ]


def plan_buffers(stages: list[Stage]) -> BufferPlan:
    members: list[dict[str, int]] = [{}, {}]
    for stage in stages[:-1]:
        m = members[stage.index % 2]
        m[stage.out_type] = max(m.get(stage.out_type, 0), stage.n_out)
    return BufferPlan(members)


def parameter_bytes(stages: list[Stage]) -> int:
    """Bytes of every weight and bias array (in flash)."""
    total = 0
    for stage in stages:
        if stage.has_params:
            size = sum(getattr(stage.layer, which).size for which in stage.arrays)
            total += size * c_type_size(stage.param_type)
    return total
