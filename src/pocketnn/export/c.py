"""Generate portable C99 for a model: inference, and optionally on-device DFA training.

The generated pair ``NAME.h`` / ``NAME.c`` needs nothing but ``<stdint.h>``: no malloc, no
float or double, no libm. Every buffer is static and sized here, at generation time. The C
computes exactly what :mod:`pocketnn` computes in Python, bit for bit:

* ``NAME_predict`` runs the forward pass of one input and returns the class (first index on
  ties) or a negative error code.
* With training, ``NAME_train_step`` applies one DFA step to a mini-batch (the weights live
  in RAM, the feedback matrices are baked in as constants) and returns how many samples of
  the batch were classified correctly before the update, or a negative error code.

Integer widths are chosen from bounds proven here. Where a bound cannot prove that a value
fits int32 (for example layer 1's ``z = a @ W + b`` when the weights may change), the C
accumulates in int64 and checks the int32 range at run time, returning ``NAME_ERR_OVERFLOW``
exactly where Python raises :class:`~pocketnn.intmath.IntegerOverflowError`. Unlike Python,
a failing training step changes no weight: every check runs before the first update.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..activations import K_BIT, SIGMOID_PIECES, TABLE_HIGH, TABLE_LOW, TANH_PIECES, Piece
from ..fileio import atomic_write_bytes
from ..intmath import INT32_MAX, INT32_MIN, signed_dtype_for
from ..losses import TARGET_VALUE
from ..model import Sequential, load_checkpoint

INT64_MAX = 2**63 - 1
INPUT_MAX = 255
"""Inputs are bytes: ``NAME_predict`` takes ``uint8_t`` values 0..255."""
DEFAULT_MAX_BATCH = 20

_C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if "
    "inline int long register restrict return short signed sizeof static struct switch typedef "
    "union unsigned void volatile while _Bool _Complex _Imaginary".split()
)


class ExportError(ValueError):
    """The model cannot be exported as asked (bad name, unsupported layer, missing feedback)."""


@dataclass(frozen=True)
class ActivationSpec:
    """What the generator needs to know about an activation.

    Attributes
    ----------
    out_bound : the largest ``|y|`` it can return for an int32 ``z``
    g_max : its largest gradient inverse (all are >= 1)
    c_call : the C call, with ``{z}``, ``{g}`` and ``{divisor}`` placeholders
    """

    out_bound: int
    g_max: int
    c_call: str


ACTIVATIONS: dict[str, ActivationSpec] = {
    "pocket_tanh": ActivationSpec(127, 127, "pocket_tanh({z}, {divisor}, {g})"),
    "pocket_sigmoid": ActivationSpec(127, 127, "pocket_sigmoid({z}, {g})"),
    "pocket_relu8bit": ActivationSpec(127, INT32_MAX, "pocket_relu8bit({z}, {g})"),
    "pocket_leakyrelu": ActivationSpec(32767, INT32_MAX, "pocket_leakyrelu({z}, {g})"),
    "plu": ActivationSpec(127, 127, "plu({z}, {g})"),
    "rescale": ActivationSpec(-(INT32_MIN // (1 << K_BIT)), 1, "rescale({z}, {g})"),
    "as_is": ActivationSpec(-INT32_MIN, 1, "as_is({z}, {g})"),
}
"""The activations export-c supports. pocket_softmax normalises a whole row, which the
element-wise C layer loop does not do; it is refused with a clear error."""


# --------------------------------------------------------------------------- C text helpers


def c_type(bound: int) -> str:
    """The smallest signed C type holding every integer in ``[-bound, bound]``."""
    try:
        return f"int{8 * signed_dtype_for(bound).itemsize}_t"
    except ValueError as exc:
        raise ExportError(str(exc)) from None


def c_int(value: int) -> str:
    """An integer literal valid in C99 for every int64 value."""
    value = int(value)
    if value == INT32_MIN:
        return "INT32_MIN"
    if not INT32_MIN < value <= INT32_MAX:
        return f"INT64_C({value})" if value > -(2**63) else "INT64_MIN"
    return str(value)


def c_array(values: np.ndarray, indent: str = "    ", width: int = 100) -> str:
    """The brace initialiser of an integer array of any rank, wrapped at ``width``."""
    values = np.asarray(values)
    if values.ndim > 1:
        rows = [indent + c_array(row, indent + "    ", width) for row in values]
        return "{\n" + ",\n".join(rows) + "\n" + indent[4:] + "}"
    items = [c_int(v) for v in values.tolist()]
    one_line = "{" + ", ".join(items) + "}"
    if len(indent) + len(one_line) <= width:
        return one_line
    lines, line = [], indent
    for item in items:
        if len(line) + len(item) + 2 > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += item + ", "
    lines.append(line.rstrip())
    return "{\n" + "\n".join(lines) + "\n" + indent[4:] + "}"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ExportError(f"name {name!r} is not a C identifier (letters, digits, _)")
    if name in _C_KEYWORDS:
        raise ExportError(f"name {name!r} is a C keyword")
    return name


def _piece_expression(p: Piece) -> str:
    """``x * mul / div + add`` in C, simplified (C's ``/`` truncates like trunc_div)."""
    if p.mul == 0:
        return str(p.add)
    term = "x" if p.mul == 1 else f"{p.mul} * x"
    if p.div != 1:
        term = f"{term} / {p.div}"
    if p.add:
        term += f" {'+' if p.add > 0 else '-'} {abs(p.add)}"
    return term


def _piecewise_c(name: str, doc: str, pieces: Sequence[Piece], signature: str, x: str) -> str:
    lines = [
        f"/* {doc} */",
        f"static int32_t {name}({signature})",
        "{",
        f"    int32_t x = {x};",
        f"    if (x < {TABLE_LOW}) x = {TABLE_LOW};  /* the table's range; outside it is flat */",
        f"    if (x > {TABLE_HIGH}) x = {TABLE_HIGH};",
    ]
    for p in pieces[:-1]:
        lines.append(f"    if (x < {p.upper}) {{ *g = {p.g}; return {_piece_expression(p)}; }}")
    last = pieces[-1]
    lines += [f"    *g = {last.g};", f"    return {_piece_expression(last)};", "}"]
    return "\n".join(lines)


def activation_c_functions(names: Sequence[str]) -> str:
    """C definitions of the activations in ``names`` (each returns y and stores g).

    Every function takes an int32 ``z`` (Python guards ``z`` to int32 before activating)
    and a pointer for the gradient inverse. The piece tables come from
    :data:`pocketnn.activations.TANH_PIECES` and ``SIGMOID_PIECES``.
    """
    prescale = f"(1 << {K_BIT})"
    defs = {
        "pocket_tanh": _piecewise_c(
            "pocket_tanh",
            f"Pocket tanh: x = z / divisor (divisor = 2^{K_BIT} * fan_in), 7 linear pieces.",
            TANH_PIECES,
            "int32_t z, int32_t divisor, int32_t *g",
            "z / divisor",
        ),
        "pocket_sigmoid": _piecewise_c(
            "pocket_sigmoid",
            f"Pocket sigmoid: x = z / 2^{K_BIT}, 7 linear pieces onto [1, 127].",
            SIGMOID_PIECES,
            "int32_t z, int32_t *g",
            f"z / {prescale}",
        ),
        "pocket_relu8bit": """\
/* Pocket ReLU 8-bit: clamp z to [0, 127]; g = 1 inside, INT32_MAX (no gradient) where clamped. */
static int32_t pocket_relu8bit(int32_t z, int32_t *g)
{
    if (z < 0) { *g = INT32_MAX; return 0; }
    if (z > 127) { *g = INT32_MAX; return 127; }
    *g = 1;
    return z;
}""",
        "pocket_leakyrelu": """\
/* Pocket leaky ReLU: z (g 1) on [0, 32767), z / 5 (g 5) on [-32767, 0), else +-32767. */
static int32_t pocket_leakyrelu(int32_t z, int32_t *g)
{
    if (z >= -32767 && z < 0) { *g = 5; return z / 5; }
    if (z >= 0 && z < 32767) { *g = 1; return z; }
    *g = INT32_MAX;
    return z < 0 ? -32767 : 32767;
}""",
        "plu": """\
/* PLU: max((x + 1) / 10 - 1, min((x - 1) / 10 + 1, x)), clamped to [-127, 127].
 * g = 1 on the identity piece, 10 on the outer slopes, 127 where clamped. */
static int32_t plu(int32_t z, int32_t *g)
{
    const int64_t x = z;  /* x - 1 must not wrap at INT32_MIN */
    const int64_t upper = (x - 1) / 10 + 1;
    const int64_t lower = (x + 1) / 10 - 1;
    const int64_t raw = lower > (upper < x ? upper : x) ? lower : (upper < x ? upper : x);
    const int64_t y = raw < -127 ? -127 : raw > 127 ? 127 : raw;
    *g = raw != y ? 127 : raw == x ? 1 : 10;
    return (int32_t)y;
}""",
        "as_is": """\
/* Identity: y = z, g = 1. */
static int32_t as_is(int32_t z, int32_t *g)
{
    *g = 1;
    return z;
}""",
        "rescale": f"""\
/* Rescale: y = z / 2^{K_BIT}, g = 1. */
static int32_t rescale(int32_t z, int32_t *g)
{{
    *g = 1;
    return z / {prescale};
}}""",
    }
    return "\n\n".join(defs[n] for n in dict.fromkeys(names) if n in defs)


# --------------------------------------------------------------------------- the plan


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


def _wide(bound: int) -> str:
    """int32_t when ``bound`` fits int32, else int64_t."""
    return "int32_t" if bound <= INT32_MAX else "int64_t"


def _layer_ident(name: str, index: int) -> str:
    ok = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name not in _C_KEYWORDS
    return name if ok else f"layer{index + 1}"


def plan_layers(
    model: Sequential,
    with_training: bool,
    feedback: Sequence[np.ndarray] | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    target_value: int = TARGET_VALUE,
) -> list[LayerPlan]:
    """Choose every integer type of the generated code from bounds proven on the model.

    Inference-only code bounds ``|z|`` with the actual constant weights; training code must
    hold for any weights within the clamp, and for any batch of up to ``max_batch`` samples.
    """
    plans: list[LayerPlan] = []
    in_bound, in_type = INPUT_MAX, "uint8_t"
    n_layers = len(model.layers)
    for i, layer in enumerate(model.layers):
        if layer.activation_name not in ACTIVATIONS:
            raise ExportError(
                f"{layer.name}: activation {layer.activation_name!r} is not supported by "
                f"export-c; supported: {', '.join(ACTIVATIONS)}"
            )
        spec = ACTIVATIONS[layer.activation_name]
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
                product_type=_wide(in_bound * w_max),
                acc_type=_wide(z_bound),
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
        plan.err_type = _wide(plan.err_bound)
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
        plan.grad_type = _wide(plan.grad_bound)
        plan.grad_product_type = _wide(plan.in_bound * plan.delta_bound)
        plan.bias_grad_type = _wide(plan.bias_grad_bound)
        step_bound = min(max(plan.grad_bound, plan.bias_grad_bound), -INT32_MIN)
        plan.new_type = _wide(plan.clamp + step_bound)


# --------------------------------------------------------------------------- generation


@dataclass
class ExportSettings:
    """What to generate: the C prefix, training or not, and its batch limit and target."""

    name: str = "model"
    with_training: bool = False
    max_batch: int = DEFAULT_MAX_BATCH
    target_value: int = TARGET_VALUE
    source: str = "an in-memory model"


def params_digest(model: Sequential) -> str:
    """A short sha256 of every parameter, to identify the model in the generated comments."""
    h = hashlib.sha256()
    for layer in model.layers:
        for a in (layer.W, layer.b):
            h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


class _Generator:
    def __init__(self, model: Sequential, plans: list[LayerPlan], cfg: ExportSettings) -> None:
        self.model, self.plans, self.cfg = model, plans, cfg
        self.p = cfg.name  # lower-case prefix of public symbols
        self.P = cfg.name.upper()  # prefix of public macros
        self.training = cfg.with_training
        self.rows = f"{self.P}_MAX_BATCH" if self.training else "ROWS"

    # ---- shared text
    def banner(self, filename: str) -> str:
        from .. import __version__

        m, cfg = self.model, self.cfg
        acts = ", ".join(f"{p.ident}: {p.activation}" for p in self.plans)
        build = (
            f"inference + on-device DFA training (max batch {cfg.max_batch}, "
            f"target value {cfg.target_value})"
            if self.training
            else "inference only"
        )
        flag = " --with-training" if self.training else ""
        return f"""\
/*
 * {filename}: integer-only neural network generated by pocketnn {__version__} (export-c).
 *
 * Model:   {cfg.source}
 *          parameters sha256 {params_digest(m)}... ({m.n_params} parameters)
 * Network: {"-".join(map(str, m.dims))} ({acts})
 * Build:   {build}
 *
 * Portable C99: integers only (no float, no double, no libm), no malloc, static buffers.
 * Bit-exact with pocketnn's Python implementation. Do not edit: regenerate with
 *   pocketnn export-c MODEL.npz --out DIR --name {cfg.name}{flag}
 */"""

    def param_decl(self, plan: LayerPlan, which: str, public: bool = False) -> str:
        """``[const] int16_t NAME_fc1_W[FC1_N_IN][FC1_N_OUT]`` (public: NAME_FC1_N_IN...)."""
        const = "" if self.training else "const "
        shape = f"{self.P}_{plan.upper}" if public else plan.upper
        dims = f"[{shape}_N_IN][{shape}_N_OUT]" if which == "W" else f"[{shape}_N_OUT]"
        return f"{const}{plan.param_type} {self.p}_{plan.ident}_{which}{dims}"

    # ---- header
    def header(self) -> str:
        p, P, cfg = self.p, self.P, self.cfg
        first, last = self.plans[0], self.plans[-1]
        layer_macros = "\n".join(
            f"#define {P}_{q.upper}_N_IN {q.n_in}\n#define {P}_{q.upper}_N_OUT {q.n_out}"
            for q in self.plans
        )
        decls = "\n".join(
            f"extern {self.param_decl(q, w, public=True)};" for q in self.plans for w in ("W", "b")
        )
        each = " ".join(f"X({p}_{q.ident}_W) X({p}_{q.ident}_b)" for q in self.plans)
        training = ""
        if self.training:
            training = f"""
#define {P}_MAX_BATCH {cfg.max_batch}  /* largest n accepted by {p}_train_step */
#define {P}_TARGET_VALUE {cfg.target_value}  /* one-hot target at the true class (0 elsewhere) */

/*
 * One DFA training step on a mini-batch, exactly as pocketnn.Trainer.step with its
 * default rounding="trunc" (a model trained with stochastic rounding continues truncating):
 * images: n rows of {P}_N_INPUTS bytes; labels: n class indices; 1 <= n <= {P}_MAX_BATCH;
 * lr_inv >= 1: every update divides the batch-summed gradient by -lr_inv (truncating).
 * Returns the number of samples classified correctly before the update (0..n), or a
 * negative {P}_ERR_* code. On error no weight has been changed.
 */
int {p}_train_step(const uint8_t *images, const uint8_t *labels, int n, int32_t lr_inv);
"""
        return f"""{self.banner(f"{p}.h")}
#ifndef {P}_H
#define {P}_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define {P}_N_INPUTS {first.n_in}  /* uint8_t inputs, e.g. pixels 0..255 */
#define {P}_N_CLASSES {last.n_out}
#define {P}_N_LAYERS {len(self.plans)}
{layer_macros}

/* Return codes: non-negative results are classes or counts, negative ones errors. */
#define {P}_OK 0
#define {P}_ERR_OVERFLOW (-1)    /* a value left int32 (Python raises IntegerOverflowError) */
#define {P}_ERR_BATCH_SIZE (-2)  /* n outside [1, {P}_MAX_BATCH] */
#define {P}_ERR_LABEL (-3)       /* a label outside [0, {P}_N_CLASSES) */
#define {P}_ERR_LR_INV (-4)      /* lr_inv < 1 */

/* Parameters, row-major as in the model file: W[n_in][n_out], b[n_out]. */
{decls}

/* Apply X(array) to every parameter array, in model-file order (to save or checksum them). */
#define {P}_FOR_EACH_PARAM(X) {each}

/*
 * Classify one input: writes the {P}_N_CLASSES integer scores (the last layer's output)
 * and returns the class with the highest score (the first one on ties), or {P}_ERR_OVERFLOW.
 */
int {p}_predict(const uint8_t input[{P}_N_INPUTS], int32_t scores[{P}_N_CLASSES]);
{training}
#ifdef __cplusplus
}}
#endif

#endif /* {P}_H */
"""

    # ---- source
    def source(self) -> str:
        P = self.P
        shapes = "\n".join(
            f"#define {q.upper}_N_IN {P}_{q.upper}_N_IN\n"
            f"#define {q.upper}_N_OUT {P}_{q.upper}_N_OUT\n"
            f"#define {q.upper}_CLAMP {q.clamp}  /* |W|, |b| <= this after every update */"
            + (
                f"\n#define {q.upper}_TANH_DIVISOR {(1 << K_BIT) * q.n_in}"
                f"  /* 2^{K_BIT} * fan_in */"
                if q.activation == "pocket_tanh"
                else ""
            )
            for q in self.plans
        )
        rows = (
            ""
            if self.training
            else ("#define ROWS 1  /* inference only: one sample at a time */\n")
        )
        parts = [
            self.banner(f"{self.p}.c"),
            f'#include "{self.p}.h"',
            shapes
            + "\n"
            + rows
            + "#define CLAMP(v, limit) ((v) < -(limit) ? -(limit) : (v) > (limit) ? (limit) : (v))",
            "/* ---- Working buffers, sized at generation time ---- */\n" + self.buffers(),
            "/* ---- Pocket activations ---- */\n"
            + activation_c_functions([q.activation for q in self.plans]),
            "/* ---- Forward pass ---- */\n" + "\n\n".join(self.forward(q) for q in self.plans),
            self.forward_all(),
            self.predict(),
        ]
        if self.training:
            parts += [
                "/* ---- DFA training ---- */\n" + self.feedback_arrays(),
                "\n\n".join(self.delta(q) for q in self.plans),
                "\n\n".join(self.gradients(q) for q in self.plans),
                "\n\n".join(self.update(q) for q in self.plans),
                self.train_step(),
            ]
        parts.append("/* ---- Parameters ---- */\n" + self.parameters())
        return "\n\n".join(parts) + "\n"

    def buffers(self) -> str:
        lines = []
        kept = ", per sample of the batch" if self.training else ""
        for q in self.plans[:-1]:
            lines.append(
                f"static {q.out_type} {q.ident}_out[{self.rows}][{q.upper}_N_OUT];"
                f"  /* {q.ident} outputs{kept} */"
            )
        for q in self.plans:
            lines.append(f"static {q.acc_type} {q.ident}_z[{q.upper}_N_OUT];  /* accumulators */")
            if self.training:
                lines.append(
                    f"static {q.g_type} {q.ident}_g[{q.upper}_N_OUT];"
                    "  /* gradient inverses of the current sample */"
                )
                lines.append(
                    f"static {q.delta_type} {q.ident}_delta[{self.rows}][{q.upper}_N_OUT];"
                    "  /* deltas of the batch */"
                )
        return "\n".join(lines)

    def forward(self, q: LayerPlan) -> str:
        out_type = "int32_t" if q is self.plans[-1] else q.out_type
        divisor = f"{q.upper}_TANH_DIVISOR"
        call = ACTIVATIONS[q.activation].c_call.format(
            z=f"(int32_t){q.ident}_z[j]", g="&g", divisor=divisor
        )
        if q.z_check:
            why = f"|z| <= {q.z_bound}, beyond int32:\n * int64 sums, checked like Python's guard"
            check = (
                f"        if ({q.ident}_z[j] < INT32_MIN || {q.ident}_z[j] > INT32_MAX) "
                f"return {self.P}_ERR_OVERFLOW;\n"
            )
        else:
            why = f"|z| <= {q.z_bound}: int32 sums cannot overflow"
            check = ""
        basis = "any weights within the clamp" if self.training else "these weights"
        keep_g = f"        {q.ident}_g[j] = ({q.g_type})g;\n" if self.training else ""
        skip = "  /* zero inputs (most pixels) add nothing */" if q.index == 0 else ""
        return f"""\
/* {q.ident}: {q.n_in} -> {q.n_out}, z = in @ W + b, then {q.activation}.
 * For {basis}: {why}. */
static int {q.ident}_forward(const {q.in_type} in[{q.upper}_N_IN], {out_type} out[{q.upper}_N_OUT])
{{
    int i, j;
    for (j = 0; j < {q.upper}_N_OUT; j++) {q.ident}_z[j] = {self.p}_{q.ident}_b[j];
    for (i = 0; i < {q.upper}_N_IN; i++) {{
        const {q.product_type} a = in[i];
        if (a == 0) continue;{skip}
        for (j = 0; j < {q.upper}_N_OUT; j++) {q.ident}_z[j] += a * {self.p}_{q.ident}_W[i][j];
    }}
    for (j = 0; j < {q.upper}_N_OUT; j++) {{
        int32_t g;
{check}        out[j] = ({out_type}){call};
{keep_g}    }}
    return {self.P}_OK;
}}"""

    def forward_all(self) -> str:
        calls = []
        for q in self.plans[:-1]:
            src = "input" if q.index == 0 else f"{self.plans[q.index - 1].ident}_out[row]"
            calls.append(
                f"    status = {q.ident}_forward({src}, {q.ident}_out[row]);\n"
                f"    if (status != {self.P}_OK) return status;"
            )
        last = self.plans[-1]
        src = "input" if last.index == 0 else f"{self.plans[-2].ident}_out[row]"
        calls.append(f"    return {last.ident}_forward({src}, scores);")
        decl = "    int status;" if len(self.plans) > 1 else "    (void)row;  /* no hidden layer */"
        return f"""\
/* Run every layer on one input, keeping the hidden outputs in buffer row `row`. */
static int forward(const uint8_t input[{self.P}_N_INPUTS], int row,
                   int32_t scores[{self.P}_N_CLASSES])
{{
{decl}
{chr(10).join(calls)}
}}

/* The class with the highest score, the first one on ties (numpy's argmax). */
static int argmax(const int32_t scores[{self.P}_N_CLASSES])
{{
    int c, best = 0;
    for (c = 1; c < {self.P}_N_CLASSES; c++) {{
        if (scores[c] > scores[best]) best = c;
    }}
    return best;
}}"""

    def predict(self) -> str:
        return f"""\
int {self.p}_predict(const uint8_t input[{self.P}_N_INPUTS], int32_t scores[{self.P}_N_CLASSES])
{{
    const int status = forward(input, 0, scores);
    return status != {self.P}_OK ? status : argmax(scores);
}}"""

    def feedback_arrays(self) -> str:
        out = []
        for q in self.plans[:-1]:
            bound = int(np.abs(q.feedback).max(initial=0))
            decl = f"static const {c_type(bound)} {q.ident}_B[{self.P}_N_CLASSES][{q.upper}_N_OUT]"
            out.append(
                f"/* {q.ident}'s fixed DFA feedback matrix B (n_classes x width). */\n"
                f"{decl} = {c_array(q.feedback)};"
            )
        return "\n\n".join(out)

    def delta(self, q: LayerPlan) -> str:
        e_type = self.plans[-1].delta_type
        if q is self.plans[-1]:
            return f"""\
/* Output layer delta of one sample: delta = e / g. */
static void {q.ident}_deltas(const {e_type} e[{self.P}_N_CLASSES],
                        {q.delta_type} delta[{q.upper}_N_OUT])
{{
    int c;
    for (c = 0; c < {self.P}_N_CLASSES; c++) delta[c] = ({q.delta_type})(e[c] / {q.ident}_g[c]);
}}"""
        if q.err_check:
            why = f"|e @ B| <= {q.err_bound} does not fit int32: int64 sums, checked"
            check = (
                f"        if (sum < INT32_MIN || sum > INT32_MAX) return {self.P}_ERR_OVERFLOW;\n"
            )
        else:
            why = f"|e @ B| <= {q.err_bound}: int32 sums cannot overflow"
            check = ""
        return f"""\
/* {q.ident} delta of one sample: delta = (e @ B) / g. {why}. */
static int {q.ident}_deltas(const {e_type} e[{self.P}_N_CLASSES],
                       {q.delta_type} delta[{q.upper}_N_OUT])
{{
    int c, j;
    for (j = 0; j < {q.upper}_N_OUT; j++) {{
        {q.err_type} sum = 0;
        for (c = 0; c < {self.P}_N_CLASSES; c++) sum += ({q.err_type})e[c] * {q.ident}_B[c][j];
{check}        delta[j] = ({q.delta_type})(sum / {q.ident}_g[j]);
    }}
    return {self.P}_OK;
}}"""

    def gradients(self, q: LayerPlan) -> str:
        a_t = q.in_type
        text = f"""\
/* {q.ident}: the batch-summed gradients, (a^T @ delta)[i][j] and colsum(delta)[j].
 * For n <= {self.P}_MAX_BATCH: |a^T @ delta| <= {q.grad_bound}, |colsum| <= {q.bias_grad_bound}. */
static {q.grad_type} {q.ident}_grad_w(const {a_t} *a, int n, int i, int j)
{{
    {q.grad_type} sum = 0;
    int s;
    for (s = 0; s < n; s++) {{
        sum += ({q.grad_product_type})a[s * {q.upper}_N_IN + i] * {q.ident}_delta[s][j];
    }}
    return sum;
}}

static {q.bias_grad_type} {q.ident}_grad_b(int n, int j)
{{
    {q.bias_grad_type} sum = 0;
    int s;
    for (s = 0; s < n; s++) sum += {q.ident}_delta[s][j];
    return sum;
}}"""
        if not q.grad_check:
            return text
        checks = []
        if q.bias_grad_bound > INT32_MAX:
            checks.append(f"""\
    for (j = 0; j < {q.upper}_N_OUT; j++) {{
        const int64_t sum = {q.ident}_grad_b(n, j);
        if (sum < INT32_MIN || sum > INT32_MAX) return {self.P}_ERR_OVERFLOW;
    }}""")
        if q.grad_bound > INT32_MAX:
            checks.append(f"""\
    for (i = 0; i < {q.upper}_N_IN; i++) {{
        for (j = 0; j < {q.upper}_N_OUT; j++) {{
            const int64_t sum = {q.ident}_grad_w(a, n, i, j);
            if (sum < INT32_MIN || sum > INT32_MAX) return {self.P}_ERR_OVERFLOW;
        }}
    }}""")
        return (
            text
            + f"""

/* {q.ident}: the gradients could leave int32, where Python raises: check before any update. */
static int {q.ident}_check_gradients(const {a_t} *a, int n)
{{
    int i, j;
{chr(10).join(checks)}
    return {self.P}_OK;
}}"""
        )

    def update(self, q: LayerPlan) -> str:
        t, p = q.new_type, f"{self.p}_{q.ident}"
        lr = "(int64_t)lr_inv" if q.grad_type == "int64_t" else "lr_inv"
        lr_b = "(int64_t)lr_inv" if q.bias_grad_type == "int64_t" else "lr_inv"
        return f"""\
/* {q.ident}: W += (a^T @ delta) / -lr_inv, b += colsum(delta) / -lr_inv (one truncating
 * division of each batch sum), then clamp to +-{q.upper}_CLAMP. `a` is the batch's input. */
static void {q.ident}_update(const {q.in_type} *a, int n, int32_t lr_inv)
{{
    int i, j, s;
    for (j = 0; j < {q.upper}_N_OUT; j++) {{
        const {t} v = ({t}){p}_b[j] + {q.ident}_grad_b(n, j) / -{lr_b};
        {p}_b[j] = ({q.param_type})CLAMP(v, {q.upper}_CLAMP);
    }}
    for (i = 0; i < {q.upper}_N_IN; i++) {{
        int active = 0;  /* an input that is 0 in every sample leaves row i unchanged */
        for (s = 0; s < n; s++) active |= a[s * {q.upper}_N_IN + i] != 0;
        if (!active) continue;
        for (j = 0; j < {q.upper}_N_OUT; j++) {{
            const {t} v = ({t}){p}_W[i][j] + {q.ident}_grad_w(a, n, i, j) / -{lr};
            {p}_W[i][j] = ({q.param_type})CLAMP(v, {q.upper}_CLAMP);
        }}
    }}
}}"""

    def train_step(self) -> str:
        P, plans = self.P, self.plans
        e_type = plans[-1].delta_type
        deltas = []
        for q in plans[:-1]:
            deltas.append(
                f"        status = {q.ident}_deltas(e, {q.ident}_delta[s]);\n"
                f"        if (status != {P}_OK) return status;"
            )
        deltas.append(f"        {plans[-1].ident}_deltas(e, {plans[-1].ident}_delta[s]);")
        inputs = ["images"] + [f"&{q.ident}_out[0][0]" for q in plans[:-1]]
        checks = [
            f"    status = {q.ident}_check_gradients({a}, n);\n"
            f"    if (status != {P}_OK) return status;"
            for q, a in zip(plans, inputs)
            if q.grad_check
        ]
        checks_text = "\n".join(checks) or "    /* (none needed: every bound fits int32) */"
        updates = "\n".join(f"    {q.ident}_update({a}, n, lr_inv);" for q, a in zip(plans, inputs))
        return f"""\
int {self.p}_train_step(const uint8_t *images, const uint8_t *labels, int n, int32_t lr_inv)
{{
    int s, c, status, correct = 0;
    if (n < 1 || n > {P}_MAX_BATCH) return {P}_ERR_BATCH_SIZE;
    if (lr_inv < 1) return {P}_ERR_LR_INV;
    for (s = 0; s < n; s++) {{
        if (labels[s] >= {P}_N_CLASSES) return {P}_ERR_LABEL;
    }}
    /* 1. Forward every sample, keeping its layer outputs, and turn its error into deltas. */
    for (s = 0; s < n; s++) {{
        int32_t scores[{P}_N_CLASSES];
        {e_type} e[{P}_N_CLASSES];  /* e = y_hat - one-hot target */
        status = forward(images + s * {P}_N_INPUTS, s, scores);
        if (status != {P}_OK) return status;
        if (argmax(scores) == labels[s]) correct++;
        for (c = 0; c < {P}_N_CLASSES; c++) {{
            e[c] = ({e_type})(({e_type})scores[c] - (c == labels[s] ? {P}_TARGET_VALUE : 0));
        }}
{chr(10).join(deltas)}
    }}
    /* 2. Check the batch sums that could leave int32, before changing anything. */
{checks_text}
    /* 3. Update every layer (hidden deltas do not depend on other layers' weights). */
{updates}
    return correct;
}}"""

    def parameters(self) -> str:
        out = []
        for q in self.plans:
            for which, values in (("W", q.W), ("b", q.b)):
                decl = self.param_decl(q, which)
                if self.training and not values.any():
                    out.append(f"{decl};  /* all zero: in .bss, no flash needed */")
                else:
                    out.append(f"{decl} = {c_array(values)};")
        return "\n\n".join(out)


# --------------------------------------------------------------------------- public API


def _load(model_or_path: Sequential | str | os.PathLike):
    if isinstance(model_or_path, Sequential):
        return model_or_path, None, {}, "an in-memory model"
    path = Path(model_or_path)
    if not path.is_file():
        raise ExportError(f"{path}: no such model file")
    model, training, arrays = load_checkpoint(path)
    return model, training, arrays, path.name


def _feedback_from_file(model: Sequential, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    keys = [f"feedback{i}" for i in range(len(model.layers) - 1)]
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ExportError(
            "--with-training needs the DFA feedback matrices, but the model file has no "
            f"{', '.join(missing)} (save it from a DFA training run, or pass feedback=...)"
        )
    return [arrays[k] for k in keys]


def generate_c(
    model_or_path: Sequential | str | os.PathLike,
    name: str = "model",
    with_training: bool = False,
    feedback: Sequence[np.ndarray] | None = None,
    max_batch: int | None = None,
    target_value: int | None = None,
) -> dict[str, str]:
    """Generate the C source text of a model; returns ``{"NAME.h": ..., "NAME.c": ...}``.

    Parameters are those of :func:`export_c`.
    """
    name = _check_name(name)
    model, training, arrays, source = _load(model_or_path)
    training = training or {}
    if max_batch is None:
        max_batch = int(training.get("batch_size", DEFAULT_MAX_BATCH))
    if target_value is None:
        target_value = int(training.get("target_value", TARGET_VALUE))
    if not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
        raise ExportError(f"max_batch must be a positive integer, got {max_batch!r}")
    if with_training and feedback is None:
        if isinstance(model_or_path, Sequential):
            raise ExportError("with_training=True on an in-memory model needs feedback=[B1, ...]")
        feedback = _feedback_from_file(model, arrays)
    plans = plan_layers(model, with_training, feedback, int(max_batch), int(target_value))
    cfg = ExportSettings(name, with_training, int(max_batch), int(target_value), source)
    gen = _Generator(model, plans, cfg)
    return {f"{name}.h": gen.header(), f"{name}.c": gen.source()}


def export_c(
    model_or_path: Sequential | str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str = "model",
    with_training: bool = False,
    feedback: Sequence[np.ndarray] | None = None,
    max_batch: int | None = None,
    target_value: int | None = None,
) -> list[Path]:
    """Write ``NAME.h`` and ``NAME.c`` for a model into ``out_dir`` (created if needed).

    Parameters
    ----------
    model_or_path : a :class:`~pocketnn.model.Sequential` or the path of a model file
    out_dir : directory for the two files (each written atomically)
    name : prefix of every public C symbol; must be a C identifier
    with_training : also generate ``NAME_train_step`` (one DFA step on a mini-batch)
    feedback : the DFA feedback matrices, one (n_classes, width) array per hidden layer;
        ``None`` takes them from the model file (``feedback0``, ``feedback1``, ...)
    max_batch : the largest batch ``NAME_train_step`` accepts (sizes its buffers); defaults
        to the file's training batch size, else 20
    target_value : the one-hot target value; defaults to the file's, else 15

    Returns
    -------
    The paths written, header first.

    Raises
    ------
    ExportError
        (a ``ValueError``) for a bad name, an unsupported activation, missing or misshapen
        feedback, or bounds beyond int64.
    pocketnn.ModelFileError
        for a missing or unreadable model file.
    """
    files = generate_c(model_or_path, name, with_training, feedback, max_batch, target_value)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for filename, text in files.items():
        atomic_write_bytes(out / filename, text.encode())
        paths.append(out / filename)
    return paths
