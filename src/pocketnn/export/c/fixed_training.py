"""The C of on-device training for fixed-point MLPs: integer backprop, momentum, softmax.

:class:`FixedTrainingGenerator` extends the layered inference code (:mod:`.cnn_inference`)
with what one step of pocketnn's Trainer does for a model of the ``frontier`` recipe:

* the forward pass keeps every sample's stage outputs (the inputs of the gradients) and the
  current sample's gradient inverses ``g``;
* the integer softmax error ``p - t`` (Q15, :func:`pocketnn.nn.losses.softmax_loss`) from
  the same exponential table, and backprop through the *current* weights (textbook order):
  ``delta = err / g``, ``err_below = (delta @ W.T) / 2**f``, each sample's deltas kept;
* MomentumSGD with truncating division: ``g = a.T @ delta [+ param * lr_inv / decay_inv]``,
  ``v = v - v / 2**m + g``, ``param = clamp(param - v / divisor)``, the divisor following
  the linear schedule from the step counter, which the C keeps with the velocities in RAM.

Python's one check that depends on the data, ``|v| + |g| <= INT64_MAX`` over each
parameter array, runs for every array before the first velocity or weight changes; every
other bound is proven at generation time (:mod:`.fixed_planner`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...nn.losses import EXP_TABLE, PROB_BITS
from ...nn.model import Sequential
from ..chips import fit_verdict
from .activations import ACTIVATIONS
from .cnn_inference import LayeredGenerator
from .cnn_planner import Stage, Step, parameter_bytes
from .ctext import c_array, c_int, c_type, c_type_size
from .fixed_planner import (
    BackwardPlan,
    Schedule,
    check_rule,
    check_trainable,
    plan_fixed_training,
    plan_schedule,
)
from .inference import argmax_function
from .settings import ExportSettings

VELOCITY_TYPE = "int64_t"
VELOCITY_SUFFIX = {"W": "W_velocity", "b": "b_velocity"}


class FixedTrainingGenerator(LayeredGenerator):
    """Writes the C of a fixed-point MLP for inference and on-device training."""

    training = True

    def __init__(
        self,
        model: Sequential,
        stages: list[Stage],
        plans: list[BackwardPlan],
        schedule: Schedule,
        cfg: ExportSettings,
    ) -> None:
        super().__init__(model, stages, cfg)
        self.plans = plans[::-1]  # first dense stage first
        self.schedule = schedule
        self.kept = self.stages[:-1]  # stages whose outputs are kept per sample
        self.g_steps = [
            step for q in self.plans for step in q.stage.steps if step.activation
        ]  # activations whose g backprop divides by

    # ---- sizes
    def ram_parts(self) -> dict[str, int]:
        """Bytes of static RAM by purpose (besides code and stack)."""
        batch = self.cfg.max_batch
        outputs = sum(batch * s.n_out * c_type_size(s.out_type) for s in self.kept)
        deltas = sum(batch * q.stage.n_out * c_type_size(q.delta_type) for q in self.plans)
        errors = sum(q.stage.n_out * c_type_size(self.err_type(q)) for q in self.plans)
        gs = sum(
            self.stage_of(step).n_out * c_type_size(self.g_type(step)) for step in self.g_steps
        )
        velocity = 8 * sum(v.size for q in self.plans for v in q.velocity.values())
        return {
            "parameters": parameter_bytes(self.stages),
            "velocities": velocity,
            "batch buffers": outputs + deltas + errors + gs + 8,
        }

    def build_lines(self) -> str:
        parts = self.ram_parts()
        ram = sum(parts.values())
        flash = parts["parameters"] + parts["velocities"]  # their initial values
        listed = "".join(f"\n *            {n:,} bytes of {what}" for what, n in parts.items())
        return f"""inference + on-device training (integer backprop, momentum, softmax;
 *          max batch {self.cfg.max_batch}); static RAM (besides code, stack) {ram:,} bytes:{listed}
 *          (the initial values of parameters and velocities in flash):
 *          {fit_verdict("parameters, velocities and buffers", flash, ram)}"""

    # ---- helpers
    def stage_of(self, step: Step) -> Stage:
        return next(s for s in self.stages if step in s.steps)

    @staticmethod
    def g_type(step: Step) -> str:
        return c_type(ACTIVATIONS[step.activation].g_max)

    def err_type(self, q: BackwardPlan) -> str:
        """The type of the error at a dense stage's output (the one below sends it)."""
        above = self.plans.index(q) + 1
        return self.plans[above].below_type if above < len(self.plans) else "int32_t"

    def input_of(self, q: BackwardPlan) -> tuple[str, str]:
        """The C expression of a dense stage's batch input (row stride N_IN) and its type."""
        if q.stage.index == 0:
            return "images", f"{self.p}_input_t"
        prev = self.stages[q.stage.index - 1]
        return f"&{prev.ident}_out[0][0]", prev.out_type

    def velocity_name(self, q: BackwardPlan, which: str) -> str:
        return f"{self.p}_{q.ident}_{VELOCITY_SUFFIX[which]}"

    def velocity_decl(self, q: BackwardPlan, which: str, public: bool = False) -> str:
        shape = f"{self.P}_{q.stage.upper}" if public else q.stage.upper
        dims = f"[{shape}_N_IN][{shape}_N_OUT]" if which == "W" else f"[{shape}_N_OUT]"
        return f"{VELOCITY_TYPE} {self.velocity_name(q, which)}{dims}"

    # ---- hooks of the layered generator
    def keep_g(self, step: Step, index: str) -> str:
        return f"{step.ident}_g[{index}] = g;" if step in self.g_steps else ""

    def _input(self, s: Stage) -> str:
        return "input" if s.index == 0 else f"{self.stages[s.index - 1].ident}_out[row]"

    def _output(self, s: Stage) -> str:
        return "scores" if s is self.stages[-1] else f"{s.ident}_out[row]"

    def scores(self) -> str:
        p, P = self.p, self.P
        return f"""\
/* Run every stage on one input, keeping each stage's output in row `row` of its buffer. */
static int forward(const {p}_input_t *input, int row, int32_t scores[{P}_N_CLASSES])
{{
{self.stage_calls()}
    return {P}_OK;
}}

int {p}_scores(const {p}_input_t input[{P}_N_INPUTS], int32_t scores[{P}_N_CLASSES])
{{
    return forward(input, 0, scores);
}}"""

    def buffer_text(self) -> str:
        P = self.P
        lines = [
            "/* ---- Working buffers, sized at generation time: every sample's stage outputs "
            "and\n * deltas are kept for the batch's update ---- */"
        ]
        for s in self.kept:
            lines.append(
                f"static {s.out_type} {s.ident}_out[{P}_MAX_BATCH][{s.n_out}];"
                f"  /* {s.ident} outputs, per sample */"
            )
        for step in self.g_steps:
            lines.append(
                f"static {self.g_type(step)} {step.ident}_g[{self.stage_of(step).n_out}];"
                f"  /* {step.layer}: gradient inverses of the current sample */"
            )
        for q in self.plans:
            lines.append(
                f"static {self.err_type(q)} {q.ident}_err[{q.stage.n_out}];"
                f"  /* the error at {q.ident}'s output, of the current sample */"
            )
            lines.append(
                f"static {q.delta_type} {q.ident}_delta[{P}_MAX_BATCH][{q.stage.n_out}];"
                f"  /* {q.ident} deltas, per sample: |delta| <= {q.err_bound} */"
            )
        return "\n".join(lines)

    def header_training(self) -> str:
        p, P, sch = self.p, self.P, self.schedule
        decls = "\n".join(
            f"extern {self.velocity_decl(q, w, public=True)};"
            for q in self.plans
            for w in q.stage.arrays
        )
        each = " ".join(
            f"X({self.velocity_name(q, w)})" for q in self.plans for w in q.stage.arrays
        )
        decay = f"param * lr_inv / {P}_DECAY_INV (truncating)" if sch.decay_inv else "none (0)"
        decay_term = f" + param * lr_inv / {P}_DECAY_INV" if sch.decay_inv else ""
        return f"""
#define {P}_MAX_BATCH {self.cfg.max_batch}  /* largest n accepted by {p}_train_step */
#define {P}_MOMENTUM {sch.momentum}  /* the velocity keeps 1 - 2**-{P}_MOMENTUM of itself a step */
#define {P}_TOTAL_STEPS {c_int(sch.total_steps)}  /* steps of the linear schedule (0: constant) */
#define {P}_DECAY_INV {sch.decay_inv}  /* weight decay in the gradient: {decay} */
#define {P}_ERR_BATCH_SIZE (-2)  /* n outside [1, {P}_MAX_BATCH] */
#define {P}_ERR_LABEL (-3)       /* a label outside [0, {P}_N_CLASSES) */
#define {P}_ERR_LR_INV (-4)      /* lr_inv < 1 */
#define {P}_ERR_STEPS (-5)       /* {p}_steps_done < 0 */

/* Optimizer state, in RAM, row-major like the parameters (save it with them to resume). */
{decls}
extern int64_t {p}_steps_done;  /* committed steps: the schedule's position */

/* Apply X(array) to every velocity array, in model-file order. */
#define {P}_FOR_EACH_STATE(X) {each}

/*
 * One training step on a mini-batch, exactly as pocketnn.Trainer.step with rounding="trunc"
 * (the device truncates; a model trained with stochastic rounding continues truncating):
 * the forward pass, the integer softmax error p - t (Q15), integer backprop through the
 * current weights (textbook order) and, for every parameter, MomentumSGD:
 *   g = a^T @ delta (summed over the batch){decay_term}
 *   v = v - v / 2**{P}_MOMENTUM + g   (checked first: max|v| + max|g| <= INT64_MAX per array)
 *   param = clamp(param - v / divisor)
 * with divisor = ceil(lr_inv * T / max(1, T - t)), T = {P}_TOTAL_STEPS and t = {p}_steps_done
 * (lr_inv when T is 0); then {p}_steps_done += 1. Every other division truncates.
 * images: n rows of {P}_N_INPUTS values; labels: n class indices; 1 <= n <= {P}_MAX_BATCH;
 * lr_inv >= 1: the step's learning-rate inverse (Trainer: lr_inv_at(epoch)). Augmentation,
 * if the model was trained with it, is the caller's to apply to the images.
 * Returns the number of samples classified correctly before the update (0..n), or a
 * negative {P}_ERR_* code. On error nothing has changed: weights, velocities, step count.
 */
int {p}_train_step(const {p}_input_t *images, const uint8_t *labels, int n, int32_t lr_inv);
"""

    def training_parts(self) -> list[str]:
        return [
            "/* ---- Training: softmax error, backprop, momentum ---- */\n" + self.softmax(),
            "\n\n".join(self.backward(q) for q in reversed(self.plans)),
            "\n\n".join(self.gradients(q) for q in self.plans),
            "\n\n".join(self.check(q) for q in self.plans),
            "\n\n".join(self.update(q) for q in self.plans),
            self.step_divisor(),
            self.train_step(),
            "/* ---- Optimizer state ---- */\n" + self.state(),
        ]

    # ---- the training C
    def softmax(self) -> str:
        P, last = self.P, self.plans[-1]
        return f"""\
/* round(2**16 * exp(-d / 16)) for d = 0, 1, ...: pocketnn.nn.losses.EXP_TABLE. */
static const int32_t exp_table[{len(EXP_TABLE)}] = {c_array(EXP_TABLE)};

{argmax_function(P)}

/* The integer softmax cross-entropy error of one sample, p - t in Q15: p = (e << 15) / sum(e)
 * with e = exp_table[min(max - score, {len(EXP_TABLE) - 1})], t = 2**15 at the label. */
static void softmax_error(const int32_t scores[{P}_N_CLASSES], int label)
{{
    int64_t e[{P}_N_CLASSES], sum = 0;
    int32_t top = scores[0];
    int c;
    for (c = 1; c < {P}_N_CLASSES; c++) {{
        if (scores[c] > top) top = scores[c];
    }}
    for (c = 0; c < {P}_N_CLASSES; c++) {{
        const int64_t gap = (int64_t)top - scores[c];
        e[c] = exp_table[gap < {len(EXP_TABLE) - 1} ? gap : {len(EXP_TABLE) - 1}];
        sum += e[c];
    }}
    for (c = 0; c < {P}_N_CLASSES; c++) {{
        const int64_t p = (e[c] << {PROB_BITS}) / sum;
        {last.ident}_err[c] = (int32_t)(p - (c == label ? {1 << PROB_BITS} : 0));
    }}
}}"""

    def backward(self, q: BackwardPlan) -> str:
        s, t = q.stage, self.err_type(q)
        divide = "".join(
            f"        d = d / {step.ident}_g[j];  /* {step.layer} */\n"
            for step in reversed(s.steps)
            if step.activation
        )
        below = self.plans.index(q) - 1
        text = f"""\
/* {q.ident}: the deltas of sample s, delta = err / g (|err| <= {q.err_bound})"""
        if below < 0:
            text += f""". */
static void {q.ident}_backward(int s)
{{
    int j;"""
        else:
            prev = self.plans[below]
            text += f""", then the error
 * at {prev.ident}'s output: (delta @ W.T) / 2**{s.frac_bits}, truncating the sum
 * (|delta @ W.T| <= {q.back_bound}). */
static void {q.ident}_backward(int s)
{{
    int i, j;"""
        text += f"""
    for (j = 0; j < {s.n_out}; j++) {{
        {t} d = {q.ident}_err[j];
{divide}        {q.ident}_delta[s][j] = ({q.delta_type})d;
    }}"""
        if below >= 0:
            prev = self.plans[below]
            bt = q.back_type
            text += f"""
    for (i = 0; i < {s.upper}_N_IN; i++) {{
        {bt} sum = 0;
        for (j = 0; j < {s.n_out}; j++) {{
            sum += ({bt}){q.ident}_delta[s][j] * {self.p}_{q.ident}_W[i][j];
        }}
        {prev.ident}_err[i] = ({q.below_type})(sum / {c_int(1 << s.frac_bits)});
    }}"""
        return text + "\n}"

    def gradients(self, q: BackwardPlan) -> str:
        a_t = self.input_of(q)[1]
        s, p = q.stage, f"{self.p}_{q.ident}"
        decay = self.schedule.decay_inv
        decay_term = f" + W[i][j] * lr_inv / {decay}" if decay else ""
        text = f"""\
/* {q.ident}: the gradient of W[i][j], (a^T @ delta)[i][j]{decay_term};
 * |a^T @ delta| <= {q.grad_bound} for n <= {self.P}_MAX_BATCH. */
static int64_t {q.ident}_value_w(const {a_t} *a, int n, int i, int j, int32_t lr_inv)
{{
    {q.grad_type} sum = 0;
    int s;
    for (s = 0; s < n; s++) {{
        sum += ({q.product_type})a[s * {s.upper}_N_IN + i] * {q.ident}_delta[s][j];
    }}
    {self.decay_line(f"{p}_W[i][j]")}
}}"""
        if "b" in s.arrays:
            text += f"""

static int64_t {q.ident}_value_b(int n, int j, int32_t lr_inv)
{{
    {q.bias_grad_type} sum = 0;
    int s;
    for (s = 0; s < n; s++) sum += {q.ident}_delta[s][j];
    {self.decay_line(f"{p}_b[j]")}
}}"""
        return text

    def decay_line(self, param: str) -> str:
        if not self.schedule.decay_inv:
            return "(void)lr_inv;\n    return sum;"
        return f"return sum + (int64_t){param} * lr_inv / {self.P}_DECAY_INV;"

    def check(self, q: BackwardPlan) -> str:
        a_t = self.input_of(q)[1]
        s = q.stage
        parts = [
            f"""\
    for (i = 0; i < {s.upper}_N_IN; i++) {{
        for (j = 0; j < {s.upper}_N_OUT; j++) {{
            const uint64_t v = magnitude({self.velocity_name(q, "W")}[i][j]);
            const uint64_t g = magnitude({q.ident}_value_w(a, n, i, j, lr_inv));
            if (v > v_max) v_max = v;
            if (g > g_max) g_max = g;
        }}
    }}
    if (v_max > (uint64_t)INT64_MAX - g_max) return {self.P}_ERR_OVERFLOW;"""
        ]
        if "b" in s.arrays:
            parts.append(f"""\
    v_max = g_max = 0;
    for (j = 0; j < {s.upper}_N_OUT; j++) {{
        const uint64_t v = magnitude({self.velocity_name(q, "b")}[j]);
        const uint64_t g = magnitude({q.ident}_value_b(n, j, lr_inv));
        if (v > v_max) v_max = v;
        if (g > g_max) g_max = g;
    }}
    if (v_max > (uint64_t)INT64_MAX - g_max) return {self.P}_ERR_OVERFLOW;""")
        text = f"""\
/* {q.ident}: Python's check of each parameter array, max|v| + max|g| <= INT64_MAX. */
static int {q.ident}_check(const {a_t} *a, int n, int32_t lr_inv)
{{
    uint64_t v_max = 0, g_max = 0;
    int i, j;
{chr(10).join(parts)}
    return {self.P}_OK;
}}"""
        if q is self.plans[0]:
            text = (
                "/* |v| without overflow, INT64_MIN included. */\n"
                "static uint64_t magnitude(int64_t v)\n{\n"
                "    return v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;\n}\n\n" + text
            )
        return text

    def update(self, q: BackwardPlan) -> str:
        a_t = self.input_of(q)[1]
        s, p = q.stage, f"{self.p}_{q.ident}"
        keep = c_int(1 << self.schedule.momentum)
        clamp = s.layer.weight_clamp
        twice = c_int(2 * clamp)
        loops = {
            "W": ("[i][j]", "value_w(a, n, i, j, lr_inv)", " " * 12),
            "b": ("[j]", "value_b(n, j, lr_inv)", " " * 8),
        }
        bodies = {}
        for which in s.arrays:
            at, value, pad = loops[which]
            velocity, param = f"{self.velocity_name(q, which)}{at}", f"{p}_{which}{at}"
            # |param| <= clamp: a step beyond 2 * clamp saturates the clamp all the same
            bodies[which] = (
                f"{pad}const int64_t v = {velocity} - {velocity} / {keep}\n"
                f"{pad}                  + {q.ident}_{value};\n"
                f"{pad}const int64_t w = (int64_t){param} - CLAMP(v / divisor, {twice});\n"
                f"{pad}{velocity} = v;\n"
                f"{pad}{param} = ({s.param_type})CLAMP(w, {c_int(clamp)});\n"
            )
        text = f"""\
/* {q.ident}: v = v - v / 2**{self.schedule.momentum} + g;
 * param = clamp(param - v / divisor, +-{clamp}), truncating. */
static void {q.ident}_update(const {a_t} *a, int n, int32_t lr_inv, int64_t divisor)
{{
    int i, j;
    for (i = 0; i < {s.upper}_N_IN; i++) {{
        for (j = 0; j < {s.upper}_N_OUT; j++) {{
{bodies["W"]}\
        }}
    }}"""
        if "b" in bodies:
            text += f"""
    for (j = 0; j < {s.upper}_N_OUT; j++) {{
{bodies["b"]}\
    }}"""
        return text + "\n}"

    def step_divisor(self) -> str:
        P = self.P
        if not self.schedule.total_steps:
            body = "    return lr_inv;  /* a constant step */"
        else:
            body = f"""\
    const int64_t scaled = (int64_t)lr_inv * {P}_TOTAL_STEPS;
    int64_t remaining = {P}_TOTAL_STEPS - {self.p}_steps_done;
    if (remaining < 1) remaining = 1;  /* steps beyond the schedule take its last size */
    return scaled / remaining + (scaled % remaining != 0);"""
        return f"""\
/* MomentumSGD.divisor: lr_inv * T / (T - t), rounded up. */
static int64_t step_divisor(int32_t lr_inv)
{{
{body}
}}"""

    def train_step(self) -> str:
        p, P = self.p, self.P
        backward = "\n".join(f"        {q.ident}_backward(s);" for q in reversed(self.plans))
        checks = []
        updates = []
        for q in reversed(self.plans):
            a, _ = self.input_of(q)
            checks.append(
                f"    status = {q.ident}_check({a}, n, lr_inv);\n"
                f"    if (status != {P}_OK) return status;"
            )
            updates.append(f"    {q.ident}_update({a}, n, lr_inv, divisor);")
        return f"""\
int {p}_train_step(const {p}_input_t *images, const uint8_t *labels, int n, int32_t lr_inv)
{{
    int s, status, correct = 0;
    int64_t divisor;
    if (n < 1 || n > {P}_MAX_BATCH) return {P}_ERR_BATCH_SIZE;
    if (lr_inv < 1) return {P}_ERR_LR_INV;
    if ({p}_steps_done < 0) return {P}_ERR_STEPS;
    for (s = 0; s < n; s++) {{
        if (labels[s] >= {P}_N_CLASSES) return {P}_ERR_LABEL;
    }}
    /* 1. Forward every sample, keeping its stage outputs; its softmax error; its deltas,
     *    backpropagated through the current weights. */
    for (s = 0; s < n; s++) {{
        int32_t scores[{P}_N_CLASSES];
        status = forward(images + s * {P}_N_INPUTS, s, scores);
        if (status != {P}_OK) return status;
        if (argmax(scores) == labels[s]) correct++;
        softmax_error(scores, labels[s]);
{backward}
    }}
    /* 2. Check every parameter array's velocity, before changing anything. */
{chr(10).join(checks)}
    /* 3. Update every velocity and parameter, then count the step. */
    divisor = step_divisor(lr_inv);
{chr(10).join(updates)}
    {p}_steps_done++;
    return correct;
}}"""

    def state(self) -> str:
        out = []
        for q in self.plans:
            for which, values in q.velocity.items():
                decl = self.velocity_decl(q, which)
                if values.any():
                    out.append(f"{decl} = {c_array(values)};")
                else:
                    out.append(f"{decl};  /* all zero: in .bss, no flash needed */")
        out.append(f"int64_t {self.p}_steps_done = {c_int(self.schedule.steps_done)};")
        return "\n\n".join(out)


def generate_fixed_training(
    model: Sequential,
    training: Mapping[str, Any] | None,
    arrays: Mapping[str, np.ndarray],
    cfg: ExportSettings,
) -> dict[str, str]:
    """``{"NAME.h": ..., "NAME.c": ...}`` of a fixed-point MLP with on-device training."""
    check_trainable(model)  # a CNN is refused as such, before its training state is read
    check_rule(training)
    schedule = plan_schedule(training, cfg.max_batch)
    stages, plans = plan_fixed_training(model, arrays, schedule)
    gen = FixedTrainingGenerator(model, stages, plans, schedule, cfg)
    return {f"{cfg.name}.h": gen.header(), f"{cfg.name}.c": gen.source()}
