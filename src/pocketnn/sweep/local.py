"""Runs on local worker processes (``spawn``ed: nothing of the parent's state leaks in)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from .execute import local_worker
from .spec import Run


def run_local(
    runs: Sequence[Run],
    paths: Sequence[Path],
    workers: int,
    on_done: Callable[[Run, str | None, bool], None],
) -> None:
    """Train every run on up to ``workers`` processes; ``on_done(run, error, stopped_early)``
    is called in this process as each one ends. Interrupted, no new run starts."""
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        pending = {pool.submit(local_worker, r, str(p)): r for r, p in zip(runs, paths)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                on_done(pending.pop(future), future.result(), False)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
