"""The ``"compiled"`` engine: whole DFA epochs and test passes in integer-only C.

The Python loop of the other engines runs every step of an epoch; here one call of C
kernels (``kernels.c``, built once by the host's C compiler and cached, see :mod:`.build`)
runs the epoch's every step: it gathers each batch, skips its zero pixels, computes the
forward pass, loss, DFA feedback, deltas and updates, and checks every int32 bound in the
layered step's order. Products run in integer vector lanes: int16 weights times 8/16-bit
inputs summed in int32 lanes wherever a bound proves no partial sum can leave int32, in
int64 elsewhere. Divisions by constants multiply by Granlund-Montgomery magic numbers
(:func:`pocketnn.engines.dfa_plan.magic`), exact C truncation for every int32 dividend.
No floating-point instruction is compiled in (``tests/test_compiled.py`` disassembles the
library to check).

Threads (``configure(threads=2)``) share each step's first layer in tasks of column
blocks (forward, then update; the later layers' update is one more task) that any thread
claims, so a thread the machine does not run holds up only a task it has claimed; a test
pass is split by rows. Every value is computed by the same instructions whatever the
thread count, so the bits never depend on it.

What the kernels do not cover (other rules, layers or activations, weight decay, other
input dtypes, bounds beyond int64) runs the layered step, with the same bits; its every
exact product (convolutions, backprop, dense layers) runs in this library too
(``matmul.c`` through :mod:`.gemm`): int16 pairs in int32 lanes, or int32 values in int32 or
int64 lanes, as the bound of each product allows, cache-blocked, split over the context's
threads; its element-wise work (fold, divisions by ``2**f``, activation tables, max
pooling, the momentum update) in ``layer_ops.c`` (:mod:`.layer_ops`). The conformance
suite (``tests/test_conformance.py``) holds the engine to the reference engine's bits.
"""

from .runner import scores, train_epoch, train_step

__all__ = ["scores", "train_epoch", "train_step"]
