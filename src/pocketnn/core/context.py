"""The run context: which engine computes products and what an int32 overflow does.

A :class:`Context` is immutable and travels in a :mod:`contextvars` variable, so every
thread (and every asyncio task) sees its own: ``configure`` in one thread never changes the
engine or the overflow policy of another. Work buffers belong to the OS thread
(:func:`workspace`), not to the context: a context can be copied into several threads at
once (``asyncio.to_thread``, ``copy_context().run``), and buffers travelling with it would
be shared by threads that run at the same time.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib.util
import os
import shutil
import threading
from collections.abc import Iterator

import numpy as np

ENGINES = ("compiled", "fused", "blas", "int")
"""Product engines, fastest first; all give the same bits (see :mod:`pocketnn.engines`)."""
INTEGER_ONLY_ENGINES = ("compiled", "int")
"""Engines under which no floating-point instruction touches a model value."""
FUSED_HINT = "the 'fused' engine needs numba: pip install 'pocketnn[fast]'"
COMPILED_HINT = (
    "the 'compiled' engine needs a C compiler to build its kernels once "
    "(apt-get install gcc, or set CC), or kernels already built by scripts/setup.sh"
)
HAS_NUMBA = importlib.util.find_spec("numba") is not None
MAX_THREADS = 8
"""The most threads an engine splits a step or a test pass over."""


def c_compiler() -> str | None:
    """The C compiler the ``compiled`` engine builds with: ``$CC``, else cc, gcc or clang."""
    for name in os.environ.get("CC", "").split()[:1] + ["cc", "gcc", "clang"]:
        path = shutil.which(name)
        if path:
            return path
    return None


HAS_C_COMPILER = c_compiler() is not None
DEFAULT_ENGINE = "compiled" if HAS_C_COMPILER else "fused" if HAS_NUMBA else "blas"
OVERFLOW_POLICIES = ("raise", "wrap")


def check_choice(what: str, value: str | None, allowed: tuple[str, ...]) -> None:
    """Refuse a value outside ``allowed`` with a message listing the valid ones."""
    if value is not None and value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")


@dataclasses.dataclass(frozen=True)
class Context:
    """How integer arithmetic runs.

    Attributes
    ----------
    engine : one of :data:`ENGINES`
    overflow : ``"raise"`` (the default: a value outside int32 raises
        :class:`~pocketnn.core.overflow.IntegerOverflowError`) or ``"wrap"`` (emulate the
        reference's 32-bit two's-complement wrap-around)
    threads : how many threads the ``compiled`` engine may split a training step or a
        test pass over (1 to :data:`MAX_THREADS`); results are identical for any count
    """

    engine: str = DEFAULT_ENGINE
    overflow: str = "raise"
    threads: int = 1

    def __post_init__(self) -> None:
        check_choice("engine", self.engine, ENGINES)
        check_choice("overflow", self.overflow, OVERFLOW_POLICIES)
        if (
            isinstance(self.threads, bool)
            or not isinstance(self.threads, (int, np.integer))
            or not 1 <= self.threads <= MAX_THREADS
        ):
            raise ValueError(
                f"threads must be an integer in [1, {MAX_THREADS}], got {self.threads!r}"
            )
        if self.engine == "fused" and not HAS_NUMBA:
            raise ImportError(FUSED_HINT)
        if self.engine == "compiled" and not HAS_C_COMPILER:
            from ..engines.compiled.build import cached_library  # loaded by now: no cycle

            if cached_library() is None:
                raise ImportError(COMPILED_HINT)


# A Context is frozen, so sharing the default between threads is safe.
_CURRENT: contextvars.ContextVar[Context] = contextvars.ContextVar(
    "pocketnn_context",
    default=Context(),  # noqa: B039
)
# Per OS thread, never per context: see the module docstring.
_THREAD = threading.local()


def current() -> Context:
    """The context in force in this thread (or task)."""
    return _CURRENT.get()


@contextlib.contextmanager
def configure(
    engine: str | None = None, overflow: str | None = None, threads: int | None = None
) -> Iterator[Context]:
    """Select the engine, the overflow policy and/or the thread count inside a ``with`` block.

    Only the calling thread (or task) is affected; the previous context returns at the end
    of the block.

    Examples
    --------
    >>> with configure(engine="int", overflow="wrap") as ctx:
    ...     ctx.engine
    'int'
    """
    ctx = derive(current(), engine, overflow, threads)
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def derive(
    base: Context,
    engine: str | None = None,
    overflow: str | None = None,
    threads: int | None = None,
) -> Context:
    """``base`` with the settings that are given (not None) replaced."""
    changes = {"engine": engine, "overflow": overflow, "threads": threads}
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


@contextlib.contextmanager
def using(ctx: Context | None) -> Iterator[Context]:
    """Run the block under ``ctx`` (the current context when None)."""
    if ctx is None:
        yield current()
        return
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def workspace() -> dict[int, np.ndarray]:
    """This thread's reusable work buffers, by slot number.

    Fresh large arrays cost page faults on every step; reusing buffers avoids that, and
    keeping them per OS thread means concurrent runs never overwrite each other's. (Tasks
    of one event loop share their thread's buffers safely: no product awaits midway.)
    """
    try:
        return _THREAD.buffers
    except AttributeError:
        _THREAD.buffers = {}
        return _THREAD.buffers
