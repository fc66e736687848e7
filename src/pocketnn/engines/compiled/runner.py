"""Run training steps, whole epochs and test passes in the compiled kernels.

Each function returns None for what the kernels do not cover, and the caller then runs
the layered path, which computes the same bits. A failing check raises the layered
path's error (same layer, operation and value); the failing step wrote nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np

from ...core.arith import INT64_MAX
from ...core.context import current
from ...core.overflow import overflow_error
from ..dfa_plan import OPERATIONS, OUTPUT_BOUND, dfa_plan, model_plan, target_limit
from .build import library
from .layout import Net, Run, exact, feedback_int32, input_of, learning_rate, net_of

DRAW_BUDGET = 1 << 21
"""Rounding draws made ahead at most (8 MB of int32): a long epoch runs in pieces."""
PROGRESS_PIECES = 64
"""With a progress callback, an epoch runs in about this many pieces (one call each)."""


class _Setup:
    """Everything a training call needs that does not change from batch to batch."""

    def __init__(self, model, rule, optimizer, x, targets, lr_inv, batch):
        self.ok = False
        plan = dfa_plan(model, rule, optimizer, lr_inv)
        view = input_of(x)
        if plan is None or view is None or not exact(model, view.magnitude, batch):
            return
        feedback = feedback_int32(rule.feedback)
        limit = target_limit(rule.feedback, model.n_classes, batch)
        if feedback is None or (targets.size and int(np.abs(targets).max()) > limit):
            return
        self.model, self.optimizer, self.x = model, optimizer, x
        self.net, self.keep = net_of(model, plan, current().overflow == "wrap", feedback)
        self.targets = np.ascontiguousarray(targets, dtype=np.int64)
        self.run = Run()
        run = self.run
        run.x, run.x_code, run.x_stride, run.x_max = x.ctypes.data, *view
        run.skip_zero_rows = int(x.dtype.kind == "u")
        run.targets, run.batch = self.targets.ctypes.data, batch
        learning_rate(run, lr_inv)
        # the summed loss of one call must fit int64: each step adds at most this much
        peak = (int(np.abs(targets).max(initial=0)) + OUTPUT_BOUND) ** 2 // 2
        self.max_steps = max(1, INT64_MAX // max(1, peak * batch * model.n_classes))
        self.ok = True

    def draws_per_step(self, order: np.ndarray) -> np.ndarray:
        """How many rounding draws each batch of ``order`` takes (the optimizer's order:
        ``W`` on the rows it updates, then ``b``, layer by layer)."""
        model, batch = self.model, self.run.batch
        dims = model.dims
        rest = sum(k * h + h for k, h in zip(dims[1:-1], dims[2:])) + dims[1]
        steps = -(-order.size // batch)
        rows = np.full(steps, dims[0], dtype=np.int64)
        if self.run.skip_zero_rows:  # as active_columns: zero columns skipped below 90 %
            starts = np.arange(0, order.size, batch)
            used = np.logical_or.reduceat(self.x[order] != 0, starts, axis=0).sum(axis=1)
            rows = np.where(10 * used > 9 * dims[0], dims[0], used)
        return rows * dims[1] + rest

    def call(self, order: np.ndarray, draws: np.ndarray | None, threads: int) -> Run:
        run = self.run
        run.order, run.n = order.ctypes.data, order.size
        run.draws = None if draws is None else draws.ctypes.data
        run.n_draws = 0 if draws is None else draws.size
        run.threads = threads
        status = library().pnn_train(ctypes.byref(self.net), ctypes.byref(run))
        if status < 0:
            raise MemoryError("the compiled engine could not allocate its work buffers")
        return run

    def error(self, run: Run):
        layer, operation = divmod(run.site, 4)
        where = f"{self.model.layers[layer].name}: {OPERATIONS[operation]}"
        return overflow_error(where, run.worst)


def train_step(model, rule, optimizer, x, targets, lr_inv: int, rng) -> tuple[int, int] | None:
    """One DFA step with the bits of the layered step; None where that step must run."""
    setup = _Setup(model, rule, optimizer, x, targets, lr_inv, x.shape[0])
    if not setup.ok or x.shape[0] == 0:
        return None
    order = np.arange(x.shape[0], dtype=np.int64)
    draws = None
    if rng is not None:  # a failed step rewinds rng in the trainer
        count = int(setup.draws_per_step(order).sum())
        draws = optimizer.draws(rng, (count,), lr_inv, np.int32)
    run = setup.call(order, draws, 1)
    if run.site >= 0:
        raise setup.error(run)
    return run.loss, run.correct


def train_epoch(
    model,
    rule,
    optimizer,
    x: np.ndarray,
    targets: np.ndarray,
    order: np.ndarray,
    batch: int,
    lr_inv: int,
    rng: np.random.Generator | None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int] | None:
    """A whole epoch (batches of ``order`` in turn); None where the layered loop must run.

    Returns the summed loss and correct count. The epoch runs in one call of the kernels
    when it can: with a progress callback, stochastic rounding (whose draws are made ahead,
    at most :data:`DRAW_BUDGET` at a time) or a loss that could leave int64, in pieces of
    whole batches. If a step fails, the earlier steps are kept (as the layered loop keeps
    them), the rounding stream is left after their draws, and the step's error is raised.
    """
    n = x.shape[0]
    setup = _Setup(model, rule, optimizer, x, targets, lr_inv, batch)
    if not setup.ok or order.size == 0:
        return None
    if order.min() < -n or order.max() >= n:
        return None  # the layered loop raises numpy's IndexError
    order = np.ascontiguousarray(np.where(order < 0, order + n, order), dtype=np.int64)
    steps = -(-order.size // batch)
    piece = min(steps, setup.max_steps)
    if progress is not None:
        piece = min(piece, max(1, -(-steps // PROGRESS_PIECES)))
    per_step = None
    if rng is not None:
        per_step = setup.draws_per_step(order)
        piece = min(piece, max(1, DRAW_BUDGET // int(per_step.max())))
    threads = current().threads
    loss = correct = done = 0
    while done < steps:
        part = order[done * batch : (done + piece) * batch]
        draws = state = None
        if rng is not None:
            state = rng.bit_generator.state
            count = int(per_step[done : done + piece].sum())
            draws = optimizer.draws(rng, (count,), lr_inv, np.int32)
        run = setup.call(part, draws, threads)
        loss, correct, done = loss + run.loss, correct + run.correct, done + run.steps
        if run.site >= 0:
            if rng is not None:  # leave the stream after the draws of the steps that ran
                rng.bit_generator.state = state
                optimizer.draws(rng, (run.draws_used,), lr_inv, np.int32)
            if progress is not None and run.steps:
                progress(done, steps)
            raise setup.error(run)
        if draws is not None and run.draws_used != draws.size:
            raise AssertionError(f"drew {draws.size} rounding draws, used {run.draws_used}")
        if progress is not None:
            progress(done, steps)
    return loss, correct


def scores(model, x: np.ndarray, batch_size: int) -> np.ndarray | None:
    """Class scores of every row of ``x`` (checked in chunks of ``batch_size`` rows, as
    :meth:`~pocketnn.nn.model.Sequential.scores` checks them); None where it must run."""
    plan = model_plan(model)
    view = input_of(x)
    if plan is None or view is None or x.shape[0] == 0 or batch_size < 1:
        return None
    if not exact(model, view.magnitude, 1):
        return None
    ctx = current()
    net, keep = net_of(model, plan, ctx.overflow == "wrap")
    out = np.empty((x.shape[0], model.n_classes), dtype=np.int64)
    fail = np.zeros(3, dtype=np.int64)
    status = library().pnn_scores(
        ctypes.byref(net),
        x.ctypes.data,
        view.code,
        view.stride,
        view.magnitude,
        x.shape[0],
        batch_size,
        ctx.threads,
        out.ctypes.data,
        fail.ctypes.data,
    )
    del keep  # the call is over: the tables may go
    if status < 0:
        raise MemoryError("the compiled engine could not allocate its work buffers")
    if status:
        layer = model.layers[int(fail[1]) // 4]
        raise overflow_error(f"{layer.name}: {OPERATIONS[0]}", int(fail[2]))
    return out


__all__ = ["Net", "scores", "train_epoch", "train_step"]
