"""The ``"fused"`` engine: a whole DFA training step in two compiled integer kernels.

At batch 20 a step of the ``blas`` engine is two large products (layer 1 forward and
update over the active pixel columns) plus ~100 small numpy calls, whose dispatch overhead
dominates. This engine keeps the two large products exactly as ``blas`` computes them
(:func:`pocketnn.core.products.matmul`: float64 BLAS under the bound check that proves it exact,
with the same int32 guard) and replaces everything else by two numba kernels that use
integer instructions only:

* :func:`dfa_deltas` (no writes to the model): activation of layer 1, forward of layers
  2..L, loss and correct count, ``e``, ``e @ B_l``, every delta, the update products and
  bias sums of layers 2..L and every int32 guard, in the order the ``blas`` step checks them;
* :func:`apply_updates`: ``W[rows] = clamp(W[rows] - round(grad / lr_inv))`` and the same
  for ``b``, layer after layer, writing the int16/int32 parameters in place.

Why the bits are those of the ``blas`` engine:

* every sum is accumulated in int64, and the caller only runs the kernels where a bound
  proves that no partial sum leaves int64 (activations are at most 127 in magnitude,
  deltas and gradients pass the int32 guard, see :func:`plan_for`); integer addition is
  associative, so the summation order does not matter;
* divisions truncate toward zero as C does. Divisors are positive and dividends lie in the
  int32 range (every dividend has passed an int32 guard), so :func:`tdiv` divides by a
  multiply and a shift with the Granlund-Montgomery "magic" numbers of :func:`magic`,
  exact for every dividend in that range (see its docstring);
* the guards compute the minimum and maximum of the whole array and raise the error of
  :func:`pocketnn.core.overflow.guard` at the first failing check in the layered step's
  order, before any parameter is written (steps are transactional on every engine); under
  ``overflow="wrap"`` they wrap each value to int32 as
  :func:`pocketnn.core.overflow.wrap_int32` does (the identity on values already in range);
* activations read their :class:`~pocketnn.nn.activations.Table` after the same
  pre-scaling;
* stochastic rounding uses the draws of :meth:`pocketnn.train.optimizer.IntegerSGD.draws`,
  made in the optimizer's order.

Anything the kernels do not cover (other rules or layers, activations without a table,
weight decay, huge divisors or targets, mixed parameter dtypes) returns ``None`` from
:func:`plan_for`, and the trainer runs the layered step with ``blas`` products instead.
Compiled code is cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np

from ..core.arith import INT32_MAX, INT32_MIN
from ..core.context import FUSED_HINT, current
from ..core.overflow import overflow_error
from .dfa_plan import EDGE, MAX_WIDTH, OPERATIONS, Plan, dfa_plan, magic, target_limit

try:
    from numba import njit
except ImportError as exc:  # pragma: no cover - exercised only without numba
    raise ImportError(FUSED_HINT) from exc

UNSUPPORTED = -2
"""Site code of :func:`dfa_deltas` for targets too large for the bound; ``blas`` runs instead."""


@njit(cache=True)
def tdiv(n, m, s, edge):
    """C's ``n / d`` for ``|n| <= 2**31``, with ``(m, s, edge) = magic(d)``."""
    a = -n if n < 0 else n
    q = (min(a, EDGE - 1) * m) >> s
    if a == EDGE:
        q = edge
    return -q if n < 0 else q


@njit(cache=True)
def _guard(x, wrap):
    """0 if ``x`` fits int32 (wrapping it in place under ``wrap``), else its worst value.

    The worst value is the maximum if that is too large, else the minimum, as
    :func:`pocketnn.core.overflow.guard` reports it.
    """
    lo, hi = x.min(), x.max()
    if lo >= INT32_MIN and hi <= INT32_MAX:
        return 0
    if not wrap:
        return hi if hi > INT32_MAX else lo
    flat = x.reshape(-1)
    for i in range(flat.size):
        flat[i] = ((flat[i] - INT32_MIN) & 0xFFFFFFFF) + INT32_MIN
    return 0


@njit(cache=True)
def _product(a, b, out):
    """``out += a @ b`` (rows of ``b`` streamed, so the inner loop is contiguous).

    Called with ``a.T`` for the update products ``a.T @ delta``.
    """
    for i in range(a.shape[0]):
        for k in range(a.shape[1]):
            aik = a[i, k]
            if aik != 0:
                for j in range(b.shape[1]):
                    out[i, j] += aik * b[k, j]


@njit(cache=True)
def _activate(z, spec, table_y):
    """``(y, index)``: pre-scale ``z`` by ``spec``'s divisor, clip, read ``table_y``."""
    y = np.empty_like(z)
    index = np.empty_like(z)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            x = tdiv(z[i, j], spec[0], spec[1], spec[2])
            k = min(max(x, spec[3]), spec[4]) - spec[3]
            index[i, j] = k
            y[i, j] = table_y[k]
    return y, index


@njit(cache=True)
def _divide_by_g(err, index, table, out):
    """``out = err / g`` truncating, ``g`` given by its table index (magic in ``table``)."""
    for i in range(err.shape[0]):
        for j in range(err.shape[1]):
            k = index[i, j]
            out[i, j] = tdiv(err[i, j], table[1, k], table[2, k], table[3, k])


@njit(cache=True)
def _column_sums(d, out):
    out.fill(0)
    for i in range(d.shape[0]):
        for j in range(d.shape[1]):
            out[0, j] += d[i, j]


@njit(cache=True)
def _first_argmax(row):
    best = 0
    for j in range(1, row.size):
        if row[j] > row[best]:
            best = j
    return best


@njit(cache=True)
def dfa_deltas(
    z1,
    weights,
    biases,
    feedback,
    targets,
    specs,
    tables,
    target_limit,
    wrap,
    delta1,
    grads,
    grad_b,
):
    """Everything of a DFA step between layer 1's two products; writes no parameter.

    Parameters
    ----------
    z1 : int64 (n, h1), layer 1's guarded pre-activation
    weights, biases : tuples of every layer's ``W`` and ``b`` (read only)
    feedback : tuple of the DFA matrices ``B_l``, one per hidden layer
    targets : int64 (n, n_classes)
    specs : int64 (L, 5), per layer the pre-scaling divisor's magic and the table's index
        range ``(m, s, edge, low, high)``
    tables : int64 (L, 4, T), per layer the outputs and the magic of the gradient inverses
    target_limit : largest ``|target|`` the int64 bound allows
    wrap : the ``"wrap"`` overflow policy instead of ``"raise"``
    delta1 : int64 (n, h1), receives layer 1's delta
    grads : int64 arrays receiving ``a.T @ delta`` of layers 2..L
    grad_b : int64 (1, width) arrays receiving every layer's ``colsum(delta)``

    Returns
    -------
    ``(loss, correct, site, worst)``: ``site`` is -1 when every guard passed, else
    ``4 * layer + operation`` (an index of ``OPERATIONS``) of the first failing guard and
    ``worst`` its reported value; :data:`UNSUPPORTED` for too large targets.
    """
    n = z1.shape[0]
    n_layers = len(weights)
    if np.abs(targets).max() > target_limit:
        return 0, 0, UNSUPPORTED, 0
    y, index = _activate(z1, specs[0], tables[0, 0])
    ys, indices = [y], [index]
    for layer in range(1, n_layers):
        w, b = weights[layer], biases[layer]
        z = np.empty((n, w.shape[1]), dtype=np.int64)
        for i in range(n):
            for j in range(z.shape[1]):
                z[i, j] = b[0, j]
        _product(ys[layer - 1], w, z)
        worst = _guard(z, wrap)
        if worst != 0:
            return 0, 0, 4 * layer, worst
        y, index = _activate(z, specs[layer], tables[layer, 0])
        ys.append(y)
        indices.append(index)
    e = np.empty_like(targets)
    loss = 0
    correct = 0
    for i in range(n):
        for j in range(e.shape[1]):
            e[i, j] = ys[n_layers - 1][i, j] - targets[i, j]
            loss += e[i, j] * e[i, j] // 2
        correct += _first_argmax(ys[n_layers - 1][i]) == _first_argmax(targets[i])
    for layer in range(n_layers):
        err = e
        if layer < n_layers - 1:
            err = np.zeros((n, feedback[layer].shape[1]), dtype=np.int64)
            _product(e, feedback[layer], err)
            worst = _guard(err, wrap)
            if worst != 0:
                return loss, correct, 4 * layer + 1, worst
        delta = delta1 if layer == 0 else np.empty_like(err)
        _divide_by_g(err, indices[layer], tables[layer], delta)
        if layer > 0:
            grad = grads[layer - 1]
            grad.fill(0)
            _product(ys[layer - 1].T, delta, grad)
            worst = _guard(grad, wrap)
            if worst != 0:
                return loss, correct, 4 * layer + 2, worst
        _column_sums(delta, grad_b[layer])
        worst = _guard(grad_b[layer], wrap)
        if worst != 0:
            return loss, correct, 4 * layer + 3, worst
    return loss, correct, -1, 0


@njit(cache=True)
def _descend(param, rows, grad, lr, clamp, draws, pos):
    """``param[rows[r]] = clamp(param[rows[r]] - round(grad[r] / lr))`` for every ``r``.

    Truncating when ``draws`` is empty; else ``floor`` plus one when the draw (from
    ``draws[pos:]``) is below the non-negative remainder, as
    :func:`pocketnn.core.arith.stochastic_div_`. Returns the position after the draws used.
    """
    m, s, edge, d = lr[0], lr[1], lr[2], lr[3]  # locals: the loops then vectorise
    for r in range(grad.shape[0]):
        p, g = param[rows[r]], grad[r]
        if draws.size == 0:
            for j in range(g.size):
                p[j] = min(max(p[j] - tdiv(g[j], m, s, edge), -clamp), clamp)
            continue
        for j in range(g.size):
            q = tdiv(g[j], m, s, edge)
            rem = g[j] - q * d
            if rem < 0:
                q -= 1
                rem += d
            q += draws[pos + j] < rem
            p[j] = min(max(p[j] - q, -clamp), clamp)
        pos += g.size
    return pos


@njit(cache=True)
def apply_updates(weights, biases, rows, grads, grad_b, lr, clamps, draws):
    """Update every layer in place, ``W`` then ``b`` per layer, as the layered step does.

    ``rows`` are the rows of layer 1's ``W`` that ``grads[0]`` covers; ``lr`` is
    ``magic(lr_inv) + (lr_inv,)``; ``draws`` is empty for truncation, else every draw of
    the step in the order the optimizer makes them.
    """
    pos = 0
    every_row = np.empty(max([g.shape[0] for g in grads]), dtype=np.int64)
    for i in range(every_row.size):  # not np.arange: numba sizes it in floating point
        every_row[i] = i
    first_row = every_row[:1]
    for layer in range(len(weights)):
        grad = grads[layer]
        w_rows = rows if layer == 0 else every_row
        pos = _descend(weights[layer], w_rows, grad, lr, clamps[layer], draws, pos)
        pos = _descend(biases[layer], first_row, grad_b[layer], lr, clamps[layer], draws, pos)


def plan_for(model, rule, optimizer, x: np.ndarray, lr_inv: int) -> Plan | None:
    """The kernels' plan for this step, or None where the layered step must run.

    What :func:`~pocketnn.engines.dfa_plan.dfa_plan` covers, for 2-D input of up to
    :data:`MAX_WIDTH` rows.
    """
    if x.ndim != 2 or x.shape[0] > MAX_WIDTH:
        return None
    return dfa_plan(model, rule, optimizer, lr_inv)


def _draws(optimizer, rng, layers, shapes, lr_inv: int) -> np.ndarray:
    """Every rounding draw of the step, made by the optimizer in its order: each layer's
    parameters in :meth:`~pocketnn.nn.layers.Dense.parameters` order (``W``, then ``b``)."""
    parts = [np.zeros(0, dtype=np.int64)]
    for layer, w_shape in zip(layers, shapes):
        dtype = optimizer.update_dtype(layer.weight_clamp, lr_inv)
        for name, param in layer.parameters().items():
            shape = w_shape if name == "W" else param.shape
            parts.append(optimizer.draws(rng, shape, lr_inv, dtype).reshape(-1))
    return np.concatenate(parts, dtype=np.int64)


def train_step(model, rule, optimizer, x, targets, lr_inv: int, rng) -> tuple[int, int] | None:
    """One DFA step with the bits of the layered step; None where that step must run.

    Returns ``(summed loss, correct predictions)`` before the update. A failing check
    raises the layered step's error before any parameter is written.
    """
    plan = plan_for(model, rule, optimizer, x, lr_inv)
    if plan is None:
        return None
    layers, first = model.layers, model.layers[0]
    feedback = rule.feedback
    z1 = first.preactivation(x)
    targets = np.asarray(targets, dtype=np.int64)
    delta1 = np.empty((x.shape[0], first.n_out), dtype=np.int64)
    grads = tuple(np.empty(layer.W.shape, dtype=np.int64) for layer in layers[1:])
    grad_b = tuple(np.empty(layer.b.shape, dtype=np.int64) for layer in layers)
    weights = tuple(layer.W for layer in layers)
    biases = tuple(layer.b for layer in layers)
    loss, correct, site, worst = dfa_deltas(
        z1,
        weights,
        biases,
        tuple(feedback),
        targets,
        plan.specs,
        plan.tables,
        target_limit(feedback, model.n_classes, x.shape[0]),
        current().overflow == "wrap",
        delta1,
        grads,
        grad_b,
    )
    if site == UNSUPPORTED:
        return None
    failed_layer, operation = divmod(site, 4) if site >= 0 else (len(layers), -1)
    if operation == 0 or site == 1:  # a forward, or fc1's feedback: before fc1's gradient
        _raise(layers[failed_layer], operation, worst)
    grad1, cols = first.weight_gradient(x, delta1)  # raises first if fc1's gradient fails
    if site >= 0:
        _raise(layers[failed_layer], operation, worst)
    grads = (grad1, *grads)
    draws = (
        np.zeros(0, dtype=np.int64)
        if rng is None
        else _draws(optimizer, rng, layers, [g.shape for g in grads], lr_inv)
    )
    rows = np.arange(first.n_in) if cols is None else cols
    lr = np.array((*magic(lr_inv), lr_inv), dtype=np.int64)
    apply_updates(weights, biases, rows, grads, grad_b, lr, plan.clamps, draws)
    return int(loss), int(correct)


def _raise(layer, operation: int, worst: int) -> None:
    """Raise the error the layered step raises for this layer and operation."""
    raise overflow_error(f"{layer.name}: {OPERATIONS[operation]}", worst)


def kernels() -> dict:
    """The compiled kernels by name (their ``signatures`` list what they were called with)."""
    return {
        f.__name__: f
        for f in (
            dfa_deltas,
            apply_updates,
            tdiv,
            _guard,
            _product,
            _activate,
            _divide_by_g,
            _column_sums,
            _first_argmax,
            _descend,
        )
    }
