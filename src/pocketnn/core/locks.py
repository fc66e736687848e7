"""A readers-writer lock: many threads may read a model at once, one may change it.

Every model carries one (``Sequential.lock``). Predicting, scoring and saving read the
parameters; a training step writes them. Without the lock a prediction running while
another thread trains the same model could mix the weights of two steps; with it, every
reader sees the parameters between two whole steps, and two trainers of one model take
turns step by step. A waiting writer holds back new readers, so a stream of predictions
cannot starve training. Different models have different locks and never wait for each
other.

It is taken once per training step, so the uncontended paths are kept short: plain
objects as context managers, and no lock at all when the writing thread reads.
"""

from __future__ import annotations

import threading


class _Guard:
    __slots__ = ("_enter", "_exit")

    def __init__(self, enter, exit) -> None:
        self._enter, self._exit = enter, exit

    def __enter__(self) -> None:
        self._enter()

    def __exit__(self, *exc_info) -> None:
        self._exit()


class ReadWriteLock:
    """Shared reading, exclusive writing; both re-entrant, and the writer may also read.

    ``with lock.reading(): ...`` and ``with lock.writing(): ...``. A thread that reads
    cannot start writing (it would wait for itself): that raises ``RuntimeError``.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None  # the writing thread's ident
        self._depth = 0  # the writer's re-entries (touched by the writer alone)
        self._waiting = 0  # writers waiting
        self._mine = threading.local()  # this thread's read depth, and whether it shares
        self._read_guard = _Guard(self._acquire_read, self._release_read)
        self._write_guard = _Guard(self._acquire_write, self._release_write)

    def reading(self) -> _Guard:
        return self._read_guard

    def writing(self) -> _Guard:
        return self._write_guard

    def _acquire_read(self) -> None:
        mine = self._mine
        depth = getattr(mine, "depth", 0)
        # Only this thread ever sets _writer to its own ident, so this unlocked read is safe.
        if depth == 0 and self._writer != threading.get_ident():
            with self._cond:
                while self._writer is not None or self._waiting:
                    self._cond.wait()
                self._readers += 1
            mine.shared = True
        elif depth == 0:
            mine.shared = False  # the writer reading what it writes: already exclusive
        mine.depth = depth + 1

    def _release_read(self) -> None:
        mine = self._mine
        mine.depth -= 1
        if mine.depth == 0 and mine.shared:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    def _acquire_write(self) -> None:
        me = threading.get_ident()
        if self._writer == me:
            self._depth += 1
            return
        if getattr(self._mine, "depth", 0):
            raise RuntimeError("a thread reading a model cannot start changing it")
        with self._cond:
            self._waiting += 1
            try:
                while self._writer is not None or self._readers:
                    self._cond.wait()
            finally:
                self._waiting -= 1
            self._writer = me
        self._depth = 1

    def _release_write(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            with self._cond:
                self._writer = None
                self._cond.notify_all()
