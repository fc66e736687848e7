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
import threading
from collections.abc import Iterator

import numpy as np

ENGINES = ("fused", "blas", "int")
"""Product engines, fastest first; all give the same bits (see :mod:`pocketnn.engines`)."""
FUSED_HINT = "the 'fused' engine needs numba: pip install 'pocketnn[fast]'"
HAS_NUMBA = importlib.util.find_spec("numba") is not None
DEFAULT_ENGINE = "fused" if HAS_NUMBA else "blas"
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
    """

    engine: str = DEFAULT_ENGINE
    overflow: str = "raise"

    def __post_init__(self) -> None:
        check_choice("engine", self.engine, ENGINES)
        check_choice("overflow", self.overflow, OVERFLOW_POLICIES)
        if self.engine == "fused" and not HAS_NUMBA:
            raise ImportError(FUSED_HINT)


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
def configure(engine: str | None = None, overflow: str | None = None) -> Iterator[Context]:
    """Select the engine and/or the overflow policy inside a ``with`` block.

    Only the calling thread (or task) is affected; the previous context returns at the end
    of the block.

    Examples
    --------
    >>> with configure(engine="int", overflow="wrap") as ctx:
    ...     ctx.engine
    'int'
    """
    base = current()
    ctx = Context(
        engine=base.engine if engine is None else engine,
        overflow=base.overflow if overflow is None else overflow,
    )
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


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
