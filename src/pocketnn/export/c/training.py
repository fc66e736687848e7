"""The C of on-device DFA training: ``NAME_train_step`` and everything it needs.

:class:`TrainingGenerator` extends the inference code with the header's training macros
and declaration, the per-sample gradient inverses and deltas, the feedback matrices baked
in as constants, the delta, gradient and update function of each layer, and
``NAME_train_step``. Every check that could fail runs before the first weight changes.
"""

from __future__ import annotations

import numpy as np

from .ctext import INT32_MAX, c_array, c_type
from .inference import InferenceGenerator
from .planner import LayerPlan


class TrainingGenerator(InferenceGenerator):
    """Writes the C of a model for inference and on-device DFA training."""

    training = True

    @property
    def rows(self) -> str:
        """Every sample's hidden outputs and deltas are kept for the batch's update."""
        return f"{self.P}_MAX_BATCH"

    def header_training(self) -> str:
        p, P, cfg = self.p, self.P, self.cfg
        return f"""
#define {P}_MAX_BATCH {cfg.max_batch}  /* largest n accepted by {p}_train_step */
#define {P}_TARGET_VALUE {cfg.target_value}  /* one-hot target at the true class (0 elsewhere) */

/*
 * One DFA training step on a mini-batch, exactly as pocketnn.Trainer.step with its
 * default rounding="trunc" (a model trained with stochastic rounding continues truncating):
 * images: n rows of {P}_N_INPUTS values; labels: n class indices; 1 <= n <= {P}_MAX_BATCH;
 * lr_inv >= 1: every update divides the batch-summed gradient by -lr_inv (truncating).
 * Returns the number of samples classified correctly before the update (0..n), or a
 * negative {P}_ERR_* code. On error no weight has been changed.
 */
int {p}_train_step(const {p}_input_t *images, const uint8_t *labels, int n, int32_t lr_inv);
"""

    def sample_buffers(self, q: LayerPlan) -> list[str]:
        return [
            f"static {q.g_type} {q.ident}_g[{q.upper}_N_OUT];"
            "  /* gradient inverses of the current sample */",
            f"static {q.delta_type} {q.ident}_delta[{self.rows}][{q.upper}_N_OUT];"
            "  /* deltas of the batch */",
        ]

    def training_parts(self) -> list[str]:
        return [
            "/* ---- DFA training ---- */\n" + self.feedback_arrays(),
            "\n\n".join(self.delta(q) for q in self.plans),
            "\n\n".join(self.gradients(q) for q in self.plans),
            "\n\n".join(self.update(q) for q in self.plans),
            self.train_step(),
        ]

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
int {self.p}_train_step(const {self.p}_input_t *images, const uint8_t *labels, int n,
{" " * len(self.p)}                int32_t lr_inv)
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
