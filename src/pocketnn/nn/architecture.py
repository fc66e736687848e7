"""Networks from a one-line description, e.g. ``c32k3-p2-c64k3-p2-f256-10``.

The grammar (tokens joined by ``-``, read left to right from the input):

``c{C}k{K}[s{S}][p{P}]``
    a convolution block: ``Conv2D`` with ``C`` output channels, a ``K x K`` kernel, stride
    ``S`` (default 1) and zero padding ``P`` (default ``K // 2``: "same" size at stride 1),
    then a :class:`~pocketnn.nn.layers.Scale` and the hidden activation
``p{K}`` / ``a{K}``
    ``K x K`` max / average pooling
``f{N}``
    a dense block: linear ``Dense`` to ``N``, ``Scale``, hidden activation (a flatten is
    inserted before the first dense block after an image)
``{N}`` (last)
    the output: linear ``Dense`` to ``N`` classes and a ``Scale`` to ``[-127, 127]``

A description of plain widths only (``784-100-50-10``) is the paper's kind of MLP
(:func:`~pocketnn.nn.model.build_mlp`), whose first width is the input size.

With ``frac_bits`` f > 0 the network is built of fixed-point layers instead (the recipe of
integer backprop with momentum): every ``Conv2D`` and ``Dense`` has weights with ``f``
fractional bits and no bias, and divides its own sums by ``2**f``, so no scaling layer is
needed after it: the activation's clamp bounds the values. Activations are then numbers
with 6 fractional bits (64 is 1.0); a :class:`~pocketnn.nn.layers.Scale` in front brings a
wider input (e.g. pixels up to 255) into ``[0, 64)``. Plain widths build the same kind of
MLP.

Every trainable layer's weight clamp is chosen so that its sums provably fit int32:
``|in| * fan_in * clamp + clamp <= 2**31 - 1`` (at most 32767), so the forward pass can
never overflow, whatever the weights learn.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from ..core.arith import INT32_MAX
from .activations import get_activation
from .layers import (
    WEIGHT_CLAMP,
    ActivationLayer,
    AvgPool2D,
    Conv2D,
    Dense,
    Flatten,
    Layer,
    MaxPool2D,
    Scale,
    scale_divisor,
)
from .model import Sequential, build_mlp

FIXED_POINT_ONE = 64
"""The value 1.0 of a fixed-point network's activations (6 fractional bits)."""

_CONV = re.compile(r"c([0-9]+)k([0-9]+)(?:s([0-9]+))?(?:p([0-9]+))?")
_POOL = re.compile(r"([pa])([0-9]+)")
_DENSE = re.compile(r"f([0-9]+)")
_WIDTH = re.compile(r"[0-9]+")


class ArchitectureError(ValueError):
    """An architecture description that cannot be built (names the token or layer)."""


def is_mlp(text: str) -> bool:
    """Whether ``text`` is the plain-widths MLP notation (``784-100-50-10``)."""
    return all(_WIDTH.fullmatch(t) for t in text.split("-"))


def provable_clamp(in_bound: int, fan_in: int, limit: int = WEIGHT_CLAMP) -> int:
    """The largest weight clamp (at most ``limit``) with ``in_bound * fan_in * c + c``
    within int32."""
    return max(1, min(limit, INT32_MAX // (in_bound * fan_in + 1)))


def build(
    text: str,
    input_shape: Sequence[int],
    activation: str = "leaky_relu8",
    input_bound: int = 255,
    scale_shift: int = 8,
    frac_bits: int = 0,
) -> Sequential:
    """The network ``text`` describes, for samples of ``input_shape`` (e.g. ``(1, 28, 28)``)
    whose values lie within ``[-input_bound, input_bound]``; ``frac_bits``: fixed-point
    layers (module docstring)."""
    mlp = is_mlp(text)
    if mlp:
        dims = [int(t) for t in text.split("-")]
        if dims[0] != math.prod(input_shape):
            raise ArchitectureError(
                f"--arch {text}: the input width {dims[0]} is not the data's "
                f"{math.prod(input_shape)}"
            )
        if not frac_bits:
            return build_mlp(dims, activation)
        text = "-".join(f"f{d}" for d in dims[1:-1]) + f"-{dims[-1]}"
    hidden = get_activation(activation)
    tokens = text.split("-")
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 1 and not mlp:
        shape = (1, 1, shape[0]) if tokens[0].startswith(("c", "p", "a")) else shape
    bound = input_bound
    layers: list[Layer] = []
    counts: dict[str, int] = {}
    if frac_bits and input_bound >= FIXED_POINT_ONE:  # inputs into [0, 1.0)
        divisor = -(-(input_bound + 1) // FIXED_POINT_ONE)
        layers.append(Scale(shape, divisor, name="input.scale"))
        bound = FIXED_POINT_ONE - 1

    def name(kind: str) -> str:
        counts[kind] = counts.get(kind, 0) + 1
        return f"{kind}{counts[kind]}"

    def flatten_if_image() -> None:
        nonlocal shape
        if len(shape) == 3:
            layers.append(Flatten(*shape, name=name("flatten")))
            shape = layers[-1].output_shape

    def linear_block(layer: Layer, fan_in: int, with_activation: bool) -> None:
        nonlocal shape, bound
        layers.append(layer)
        shape = layer.output_shape
        n = layer.name
        if not frac_bits:
            layers.append(Scale(shape, scale_divisor(fan_in, scale_shift), name=f"{n}.scale"))
        bound = 127
        if with_activation:
            layers.append(ActivationLayer(shape, activation, name=f"{n}.act"))
            bound = hidden.out_bound

    fixed = {"frac_bits": frac_bits, "bias": False} if frac_bits else {}
    for i, token in enumerate(tokens):
        last = i == len(tokens) - 1
        try:
            if m := _CONV.fullmatch(token):
                if len(shape) != 3:
                    raise ArchitectureError(f"{token}: a convolution needs an image input")
                c, k = int(m[1]), int(m[2])
                stride = int(m[3]) if m[3] else 1
                pad = int(m[4]) if m[4] is not None else k // 2
                fan_in = shape[0] * k * k
                conv = Conv2D(
                    shape[0],
                    c,
                    k,
                    shape[1],
                    shape[2],
                    stride,
                    pad,
                    name=name("conv"),
                    weight_clamp=provable_clamp(bound, fan_in),
                    **fixed,
                )
                linear_block(conv, fan_in, True)
            elif m := _POOL.fullmatch(token):
                if len(shape) != 3:
                    raise ArchitectureError(f"{token}: pooling needs an image input")
                cls = MaxPool2D if m[1] == "p" else AvgPool2D
                layers.append(cls(*shape, int(m[2]), name=name("pool")))
                shape = layers[-1].output_shape
            elif (m := _DENSE.fullmatch(token)) or (last and _WIDTH.fullmatch(token)):
                flatten_if_image()
                n = int(m[1]) if m else int(token)
                fan_in = math.prod(shape)
                dense = Dense(
                    fan_in,
                    n,
                    "as_is",
                    name=name("fc"),
                    weight_clamp=provable_clamp(bound, fan_in),
                    **fixed,
                )
                linear_block(dense, fan_in, not last)
            else:
                raise ArchitectureError(
                    f"{token}: not a layer (c32k3, c32k3s2p1, p2, a2, f256, or the class count "
                    "last)"
                )
        except ArchitectureError as exc:
            raise ArchitectureError(f"--arch {text}: {exc}") from None
        except ValueError as exc:  # a layer refused its configuration: it names itself
            raise ArchitectureError(f"--arch {text}: {token}: {exc}") from None
    if not _WIDTH.fullmatch(tokens[-1]):
        raise ArchitectureError(f"--arch {text}: must end with the number of classes")
    return Sequential(layers)


def calibrate(model: Sequential, x: np.ndarray, target: int = 24) -> None:
    """Set every :class:`Scale` layer's divisor from a sample batch ``x``, in order, so the
    mean magnitude of its output is about ``target``: ``divisor = max(1, mean|z| // target)``
    (integers only). Weights are then free to be large (fine update steps) whatever their
    initial scale; call it once after initialisation, before training."""
    a = model.check_input(x)
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Scale):
            total = int(np.abs(a).sum(dtype=np.int64)) if a.size else 0
            c = layer.config
            divisor = max(1, total // max(1, a.size) // target)
            model.layers[i] = layer = Scale(c.shape, divisor, c.bound, c.error_bits, name=c.name)
        a = layer.infer(a)
