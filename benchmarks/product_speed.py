"""Time the exact products of one CNN training step per engine, alone, in one run.

Usage (from the repository root)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src \\
        python benchmarks/product_speed.py --json product_speed.json

The products are the convolution layers' of ``c16k3-p2-c32k3-p2-f64-10`` (the ``cnn``
preset's network before it widened; batch 32): forward ``cols @ W``, gradient
``cols.T @ delta`` and backward ``delta @ W.T``, for conv1 in its chunks of 8192 unfolded
rows and for conv2, at their dtypes and layouts (int8 columns, int16 weights, int64
deltas, transposed views) and with magnitudes as measured in training (weights up to 850
and 330, deltas up to 10,000). Each is called through
:func:`pocketnn.core.products.exact_matmul`, bound checks included, as the layers call it.
Each round times every (engine, product) pair in turn, the engine order alternating; a
pair's figure is its fastest call over the rounds (process CPU time, one thread, BLAS on
one thread as in training; noise only adds time). Gop/s counts a multiply-add as 2; the
step total weights each product by its calls per step. The machine is shared and noisy:
compare engines within one run only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench import machine  # noqa: E402

import pocketnn  # noqa: E402
from pocketnn.core.context import ENGINES  # noqa: E402
from pocketnn.core.products import exact_matmul  # noqa: E402
from pocketnn.engines.blas import single_thread_blas  # noqa: E402
from pocketnn.io.atomic import atomic_write_bytes  # noqa: E402

LAYERS = {  # name: (unfolded rows per call, calls per step, fan-in, channels out, |W| peak)
    "conv1": (8192, 3, 9, 16, 850),
    "conv1 last chunk": (512, 1, 9, 16, 850),
    "conv2": (6272, 1, 144, 32, 330),
}
DELTA_PEAK = 10_000


def products(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """``name: (a, b, calls per step)`` for every product of the step's convolutions."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer, (rows, calls, fan_in, channels, w_peak) in LAYERS.items():
        cols = rng.integers(-128, 128, (rows, fan_in), dtype=np.int8)
        w = rng.integers(-w_peak, w_peak + 1, (fan_in, channels)).astype(np.int16)
        delta = rng.integers(-DELTA_PEAK, DELTA_PEAK + 1, (rows, channels))
        out[f"{layer} forward cols @ W"] = (cols, w, calls)
        out[f"{layer} gradient cols.T @ delta"] = (cols.T, delta, calls)
        out[f"{layer} backward delta @ W.T"] = (delta, w.T, calls)
    return out


def usable(engine: str) -> bool:
    """Whether this machine runs ``engine`` (numba for ``fused``, kernels for ``compiled``)."""
    try:
        with pocketnn.configure(engine=engine):
            return True
    except ImportError:
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--engines", default=",".join(e for e in ENGINES if usable(e)))
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--json", type=Path, help="write every figure to this file")
    args = p.parse_args()
    engines = args.engines.split(",")
    cases = products()
    info = machine()
    best = {(e, name): float("inf") for e in engines for name in cases}
    with pocketnn.configure(threads=1), single_thread_blas():  # as training runs them
        for e in engines:  # warm up (kernels, buffers) and check the bits
            with pocketnn.configure(engine=e):
                for name, (a, b, _) in cases.items():
                    got = exact_matmul(a, b)[0]
                    assert np.array_equal(got, a.astype(np.int64) @ b.astype(np.int64)), (e, name)
        for r in range(args.rounds):
            for e in engines[:: 1 if r % 2 == 0 else -1]:
                with pocketnn.configure(engine=e):
                    for name, (a, b, _) in cases.items():
                        start = time.process_time()
                        exact_matmul(a, b)
                        best[e, name] = min(best[e, name], time.process_time() - start)
    lines = [
        f"machine: {info['cpu']}, {info['nproc']} cores, numpy {info['numpy']}; load average "
        f"at start {tuple(round(v, 2) for v in info['load_average_start'])}",
        f"fastest of {args.rounds} interleaved rounds, process CPU time, one thread; "
        "ms per call (Gop/s)",
        f"{'product':38s} {'shape':>18s} " + " ".join(f"{e:>17s}" for e in engines),
    ]
    step = {e: [0.0, 0] for e in engines}
    for name, (a, b, calls) in cases.items():
        ops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
        shape = f"{a.shape[0]}x{a.shape[1]}x{b.shape[1]}"
        cells = []
        for e in engines:
            seconds = max(best[e, name], 1e-9)
            step[e][0] += seconds * calls
            step[e][1] += ops * calls
            cells.append(f"{seconds * 1e3:7.3f} ({ops / seconds / 1e9:6.1f})")
        lines.append(f"{name:38s} {shape:>18s} " + " ".join(f"{c:>17s}" for c in cells))
    lines.append(
        f"{'one step (calls weighted)':38s} {'':>18s} "
        + " ".join(f"{s * 1e3:7.3f} ({o / s / 1e9:6.1f})" for s, o in step.values())
    )
    if "blas" in step:
        lines.append(
            "step time / blas's: "
            + ", ".join(f"{e} {step[e][0] / step['blas'][0]:.2f}x" for e in engines)
        )
    print("\n".join(lines))
    if args.json:
        record = {
            "machine": info,
            "settings": vars(args) | {"json": str(args.json)},
            "seconds": {f"{e}|{name}": s for (e, name), s in best.items()},
            "table": lines,
        }
        atomic_write_bytes(args.json, (json.dumps(record, indent=1, default=str) + "\n").encode())


if __name__ == "__main__":
    main()
