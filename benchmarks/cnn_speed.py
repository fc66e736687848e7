"""Time integer CNN training steps per engine next to PyTorch float32, all in one run.

Usage (from the repository root; PyTorch is optional, its column is skipped without it)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src \\
        python benchmarks/cnn_speed.py --json cnn_speed.json

The network is the ``cnn`` preset's (its ``arch``, read from
``pocketnn.cli.presets.PRESETS``; fixed-point layers, leaky ReLU, backprop with momentum
and softmax, batch 32), on real MNIST, no augmentation (PyTorch gets none either).
``--arch`` times another architecture with the same recipe (e.g.
``c32k3-p2-c64k3-p2-f128-10``); PyTorch gets the same layers.

Each round trains the next ``--steps`` batches with every method in turn, the order
alternating from round to round; a method's figure is the median over rounds of its time
per step: process CPU time with one thread, wall time with more. The machine is shared and
noisy, so only figures of the same run are compared: each method's ratio to PyTorch is
taken from the medians of this run. An epoch of 60,000 images
is extrapolated from the step time (1875 steps), and labelled so.

PyTorch trains the same architecture in float32 (Conv2d, LeakyReLU(1/4), MaxPool2d,
Linear; no scaling layers), MSE loss against one-hot targets, plain SGD, same batch, with
``torch.set_num_threads(--threads)``. ``--threads`` is also the engines' thread count, but
pocketnn's layered CNN step runs on one thread whatever it is (training limits BLAS to one
thread; only the compiled DFA kernels split work).

After the timed rounds, one more slice per engine is profiled: the calls of the exact
products made by the convolution layers (forward ``cols @ W``, backward ``delta @ W.T``,
gradient ``cols.T @ delta``) and of ``unfold``/``fold`` are timed through wrappers
installed here (the library is not changed), giving their share of the step and the
products' achieved rate in Gop/s (2 operations per multiply-add). The machine's float64
(and float32) GEMM rate is measured in the same run at the same shapes (numpy ``matmul``,
contiguous operands, fastest of several calls) and on a 1024^3 product.

``--baseline SRC`` adds the ``pocketnn`` package of another revision (its ``src/``) in the
same process, for an interleaved A/B of the same steps (``--baseline-engines``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ab_compare import import_baseline  # noqa: E402
from bench import machine  # noqa: E402

import pocketnn  # noqa: E402
from pocketnn.cli.presets import IMAGE_SHAPE, PRESETS  # noqa: E402
from pocketnn.core.context import ENGINES, HAS_C_COMPILER, HAS_NUMBA  # noqa: E402
from pocketnn.datasets import load_dataset  # noqa: E402
from pocketnn.io.atomic import atomic_write_bytes  # noqa: E402
from pocketnn.nn.architecture import build  # noqa: E402

RECIPE = PRESETS["cnn"]["mnist"]
EPOCH_IMAGES = 60_000
PRODUCTS = ("matmul", "exact_matmul")  # the conv module's names for core.products' functions
FOLDS = ("unfold", "fold")
LAYER_METHODS = ("forward", "delta", "backward", "gradient")


def clock(threads: int) -> Callable[[], float]:
    """CPU time with one thread (noise only adds to it); wall time with more (CPU time would
    add the threads up)."""
    return time.process_time if threads == 1 else time.perf_counter


class PocketnnRun:
    """One engine of one pocketnn package training its own copy of the preset's CNN."""

    def __init__(
        self, pkg, engine: str, threads: int, x: np.ndarray, y: np.ndarray, arch: str
    ) -> None:
        self.pkg, self.engine, self.threads, self.x, self.y = pkg, engine, threads, x, y
        self.arch = arch
        self.trainer = self.fresh_trainer()
        self.warm_up()

    def fresh_trainer(self):
        """The preset's network (or ``--arch``) and optimizer, as ``pocketnn train --preset
        cnn`` builds them (fixed-point layers, momentum with a step falling over a 10-epoch
        run)."""
        name = self.pkg.__name__
        arch = importlib.import_module(f"{name}.nn.architecture")
        seeding = importlib.import_module(f"{name}.train.seeding")
        momentum = importlib.import_module(f"{name}.train.momentum")
        bp = importlib.import_module(f"{name}.train.rules.bp")
        model = arch.build(
            self.arch,
            IMAGE_SHAPE,
            activation=RECIPE["activation"],
            frac_bits=RECIPE["frac_bits"],
        )
        seeding.fixed_point_init(model, 0)
        optimizer = momentum.MomentumSGD(
            momentum=RECIPE["momentum"],
            total_steps=RECIPE["epochs"] * math.ceil(EPOCH_IMAGES / RECIPE["batch_size"]),
            lr_inv=RECIPE["lr_inv"],
            lr_double_every=RECIPE["lr_double_every"],
            rounding=RECIPE["rounding"],
            seed=0,
        )
        return self.pkg.Trainer(
            model,
            rule=bp.Backprop(updated_weights=RECIPE["bp_weights"] == "updated"),
            optimizer=optimizer,
            batch_size=RECIPE["batch_size"],
            loss=RECIPE["loss"],
            seed=0,
        )

    def warm_up(self) -> None:
        """Load kernels, JIT code and caches on a throwaway model before any timing."""
        trainer = self.fresh_trainer()
        with self.pkg.configure(engine=self.engine, threads=self.threads):
            trainer.train_epoch(self.x[:64], self.y[:64])

    def run(self, part: slice) -> None:
        with self.pkg.configure(engine=self.engine, threads=self.threads):
            self.trainer.train_epoch(self.x[part], self.y[part])

    def parameters(self) -> list[np.ndarray]:
        return [p for layer in self.trainer.model.layers for p in layer.parameters().values()]

    @contextlib.contextmanager
    def profiled(self, threads: int) -> Iterator[dict]:
        """Time the convolution layers' products and unfold/fold, and every layer's own
        calls by layer type, while the block runs (wrappers on the conv module's names and
        on this model's layer objects; nothing in the library changes)."""
        conv = importlib.import_module(f"{self.pkg.__name__}.nn.layers.conv")
        now = clock(threads)
        stats = {"products": 0.0, "ops": 0, "calls": {}, "folds": 0.0, "layers": {}}

        def timed(fn, record):
            def call(*args, **kwargs):
                start = now()
                result = fn(*args, **kwargs)
                record(now() - start, *args)
                return result

            return call

        def product(seconds, a, b, *_):
            stats["products"] += seconds
            shape = (a.shape[0], a.shape[1], b.shape[1])
            stats["ops"] += 2 * math.prod(shape)
            stats["calls"][shape] = stats["calls"].get(shape, 0) + 1

        def folding(seconds, *_):
            stats["folds"] += seconds

        def by_type(kind):
            def record(seconds, *_):
                stats["layers"][kind] = stats["layers"].get(kind, 0.0) + seconds

            return record

        saved = {name: getattr(conv, name) for name in PRODUCTS + FOLDS if hasattr(conv, name)}
        for name, fn in saved.items():
            setattr(conv, name, timed(fn, product if name in PRODUCTS else folding))
        layers = self.trainer.model.layers
        for layer in layers:
            for method in LAYER_METHODS:
                setattr(layer, method, timed(getattr(layer, method), by_type(layer.type_name)))
        try:
            yield stats
        finally:
            for name, fn in saved.items():
                setattr(conv, name, fn)
            for layer in layers:
                for method in LAYER_METHODS:
                    delattr(layer, method)


class TorchRun:
    """The same architecture in PyTorch float32, read off the pocketnn model's layers."""

    def __init__(self, torch, model, threads: int, x: np.ndarray, y: np.ndarray) -> None:
        self.torch, self.threads = torch, threads
        torch.manual_seed(0)
        nn, layers = torch.nn, []
        for layer in model.layers:
            c, kind = layer.config, layer.type_name
            if kind == "Conv2D":
                layers.append(
                    nn.Conv2d(c.in_channels, c.out_channels, c.kernel, c.stride, c.padding)
                )
            elif kind in ("MaxPool2D", "AvgPool2D"):
                layers.append((nn.MaxPool2d if kind == "MaxPool2D" else nn.AvgPool2d)(c.size))
            elif kind == "Flatten":
                layers.append(nn.Flatten())
            elif kind == "Dense":
                layers.append(nn.Linear(c.n_in, c.n_out))
            elif kind == "Activation":
                layers.append(nn.LeakyReLU(0.25))
            elif kind != "Scale":  # integer rescaling: nothing to do in float
                raise ValueError(f"no PyTorch counterpart for a {kind} layer")
        self.net = nn.Sequential(*layers)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.01)
        self.x = torch.from_numpy(x.astype(np.float32) / 255)
        self.targets = torch.nn.functional.one_hot(torch.from_numpy(y.astype(np.int64)), 10)
        self.targets = self.targets.float()
        self.batch = RECIPE["batch_size"]
        self.run(slice(0, 4 * self.batch))  # warm up

    def run(self, part: slice) -> None:
        saved = self.torch.get_num_threads()
        self.torch.set_num_threads(self.threads)
        try:
            for start in range(part.start, part.stop, self.batch):
                batch = slice(start, min(start + self.batch, part.stop))
                self.opt.zero_grad(set_to_none=True)
                out = self.net(self.x[batch])
                self.torch.nn.functional.mse_loss(out, self.targets[batch]).backward()
                self.opt.step()
        finally:
            self.torch.set_num_threads(saved)


def gemm_rates(calls: dict, threads: int, trials: int = 15) -> dict:
    """float64 and float32 ``matmul`` rates (Gflop/s) at the conv products' shapes, weighted
    by how often each shape is called, and on a 1024^3 product."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    now = clock(threads)

    def best(m: int, k: int, n: int, dtype) -> float:
        """Seconds per call: the fastest of ``trials`` runs of enough calls to last ~2 ms."""
        a = rng.integers(-127, 128, (m, k)).astype(dtype)
        b = rng.integers(-127, 128, (k, n)).astype(dtype)
        out = np.empty((m, n), dtype=dtype)
        start = now()
        np.matmul(a, b, out=out)
        calls = max(1, int(0.002 / max(now() - start, 1e-6)))
        fastest = float("inf")
        for _ in range(trials):
            start = now()
            for _ in range(calls):
                np.matmul(a, b, out=out)
            fastest = min(fastest, (now() - start) / calls)
        return max(fastest, 1e-9)

    rates = {}
    with threadpool_limits(limits=threads, user_api="blas"):
        for name, dtype in (("float64", np.float64), ("float32", np.float32)):
            ops = sum(2 * math.prod(s) * c for s, c in calls.items())
            seconds = sum(best(*s, dtype) * c for s, c in calls.items())
            rates[f"{name}_conv_shapes"] = ops / seconds / 1e9 if seconds else None
            rates[f"{name}_1024"] = 2 * 1024**3 / best(1024, 1024, 1024, dtype) / 1e9
    return rates


def interleave(methods: dict, args, x_len: int) -> dict[str, list[float]]:
    """Seconds per step of each method in each round, rounds interleaved."""
    images = args.steps * RECIPE["batch_size"]
    per_step: dict[str, list[float]] = {name: [] for name in methods}
    now = clock(args.threads)
    for r in range(args.rounds):
        start = (r * images) % (x_len - images)
        part = slice(start, start + images)
        for name in list(methods)[:: 1 if r % 2 == 0 else -1]:
            began = now()
            methods[name].run(part)
            per_step[name].append((now() - began) / args.steps)
        print(f"  round {r + 1}/{args.rounds} done", flush=True)
    return per_step


def profile(runs: dict, args, x_len: int) -> dict:
    """One more slice per pocketnn method with the convolution calls timed."""
    images = args.profile_steps * RECIPE["batch_size"]
    part = slice(x_len - images, x_len)
    now, out = clock(args.threads), {}
    for name, run in runs.items():
        with run.profiled(args.threads) as stats:
            began = now()
            run.run(part)
            total = now() - began
        out[name] = {
            "step_s": total / args.profile_steps,
            "conv_products_s": stats["products"] / args.profile_steps,
            "unfold_fold_s": stats["folds"] / args.profile_steps,
            "conv_products_share": stats["products"] / total,
            "unfold_fold_share": stats["folds"] / total,
            "conv_gops": stats["ops"] / stats["products"] / 1e9 if stats["products"] else None,
            "layer_share": {kind: t / total for kind, t in stats["layers"].items()},
            "calls_per_step": {
                "x".join(map(str, s)): c / args.profile_steps for s, c in stats["calls"].items()
            },
            "_calls": {s: c / args.profile_steps for s, c in stats["calls"].items()},
        }
    return out


def report(per_step: dict, prof: dict, rates: dict, args, info: dict) -> list[str]:
    median = {name: statistics.median(times) for name, times in per_step.items()}
    torch_s = median.get("torch float32")
    steps = math.ceil(EPOCH_IMAGES / RECIPE["batch_size"])
    unit = "CPU" if args.threads == 1 else "wall"
    lines = [
        f"machine: {info['cpu']}, {info['nproc']} cores, Python {info['python']}, "
        f"numpy {info['numpy']}, torch {info['torch']}",
        f"load average at start {tuple(round(v, 2) for v in info['load_average_start'])}, "
        f"at end {tuple(round(v, 2) for v in os.getloadavg())}",
        "",
        f"{args.arch} on MNIST, integer backprop, batch {RECIPE['batch_size']}, "
        f"{args.threads} thread(s); median of {args.rounds} interleaved rounds of "
        f"{args.steps} steps ({unit} time); all measured in this run",
        f"{'method':24s} {'ms/step':>8s} {'min':>7s} {'max':>7s} "
        f"{'epoch s*':>9s} {'x PyTorch':>10s}",
    ]
    for name, times in per_step.items():
        ratio = f"{median[name] / torch_s:9.2f}x" if torch_s else "        -"
        lines.append(
            f"{name:24s} {median[name] * 1e3:8.2f} {min(times) * 1e3:7.2f} "
            f"{max(times) * 1e3:7.2f} {median[name] * steps:9.1f} {ratio}"
        )
    lines.append(f"* epoch: extrapolated from the step time to {steps} steps of 60,000 images")
    if torch_s is None:
        lines.append("PyTorch is not installed: its column is skipped (pip install torch)")
    lines += [
        "",
        f"where a step's time goes (one more slice of {args.profile_steps} steps per method, "
        "calls timed through wrappers; measured in this run)",
        f"{'method':24s} {'ms/step':>8s} {'conv products':>15s} {'unfold+fold':>13s} "
        f"{'conv Gop/s':>11s} {'of f64 ceiling':>15s}",
    ]
    ceiling = rates.get("float64_conv_shapes")
    for name, p in prof.items():
        gops = p["conv_gops"] or 0.0
        of = f"{gops / ceiling * 100:14.0f}%" if ceiling else "              -"
        lines.append(
            f"{name:24s} {p['step_s'] * 1e3:8.2f} "
            f"{p['conv_products_s'] * 1e3:7.2f} ({p['conv_products_share'] * 100:3.0f}%) "
            f"{p['unfold_fold_s'] * 1e3:6.2f} ({p['unfold_fold_share'] * 100:3.0f}%) "
            f"{gops:11.2f} {of}"
        )
    lines.append(
        "by layer type (forward, delta, backward, gradient; the rest: loss, optimizer, loop):"
    )
    for name, p in prof.items():
        shares = p["layer_share"]
        parts = [f"{kind} {share * 100:.0f}%" for kind, share in shares.items()]
        lines.append(
            f"  {name:22s} {', '.join(parts)}, rest {(1 - sum(shares.values())) * 100:.0f}%"
        )
    if rates:
        lines += [
            "",
            "GEMM ceiling of this machine, numpy matmul, measured in this run "
            f"({args.threads} BLAS thread(s), Gflop/s): at the conv products' shapes "
            f"float64 {rates['float64_conv_shapes']:.1f}, float32 "
            f"{rates['float32_conv_shapes']:.1f}; 1024^3 float64 {rates['float64_1024']:.1f}, "
            f"float32 {rates['float32_1024']:.1f}",
        ]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    available = [
        e for e in ENGINES if (e != "fused" or HAS_NUMBA) and (e != "compiled" or HAS_C_COMPILER)
    ]
    p.add_argument("--engines", default=",".join(available))
    p.add_argument("--arch", default=RECIPE["arch"], help="the network (default: the preset's)")
    p.add_argument("--steps", type=int, default=50, help="steps per method per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--profile-steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--baseline", type=Path, help="another revision's src/, for an A/B")
    p.add_argument("--baseline-engines", default="blas")
    p.add_argument("--json", type=Path, help="write every figure to this file")
    args = p.parse_args()
    if min(args.steps, args.rounds, args.profile_steps, args.threads) < 1:
        p.error("--steps, --rounds, --profile-steps and --threads must be at least 1")

    try:
        build(args.arch, IMAGE_SHAPE, activation=RECIPE["activation"])
    except ValueError as e:
        p.error(str(e))

    data = load_dataset("mnist", verbose=False)
    x = data.train_images.reshape(-1, *IMAGE_SHAPE)
    y = data.train_labels
    if (args.rounds * args.steps + args.profile_steps) * RECIPE["batch_size"] > len(x):
        p.error("--rounds * --steps + --profile-steps batches must fit in 60,000 images")
    info = machine()
    print(f"pocketnn from {Path(pocketnn.__file__).parent}", flush=True)

    runs: dict[str, PocketnnRun] = {}
    for engine in args.engines.split(","):
        runs[f"pocketnn {engine}"] = PocketnnRun(pocketnn, engine, args.threads, x, y, args.arch)
    if args.baseline is not None:
        base = import_baseline(args.baseline)
        for engine in args.baseline_engines.split(","):
            runs[f"baseline {engine}"] = PocketnnRun(base, engine, args.threads, x, y, args.arch)
    methods: dict[str, object] = dict(runs)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        model = next(iter(runs.values())).trainer.model
        methods["torch float32"] = TorchRun(torch, model, args.threads, x, y)

    per_step = interleave(methods, args, len(x) - args.profile_steps * RECIPE["batch_size"])
    params = [run.parameters() for run in runs.values()]
    same = all(
        len(p) == len(params[0]) and all(np.array_equal(a, b) for a, b in zip(p, params[0]))
        for p in params
    )
    prof = profile(runs, args, len(x))
    calls = next(iter(prof.values()))["_calls"]
    rates = gemm_rates(calls, args.threads)
    lines = report(per_step, prof, rates, args, info)
    lines.append(f"every pocketnn method left the same parameters after the timed rounds: {same}")
    print("\n".join(lines))
    if args.json:
        for p in prof.values():
            del p["_calls"]
        record = {
            "machine": info,
            "settings": {**vars(args), "recipe": RECIPE},
            "per_step_s": per_step,
            "median_step_s": {name: statistics.median(t) for name, t in per_step.items()},
            "profile": prof,
            "gemm_gflops": rates,
            "same_parameters": same,
            "table": lines,
        }
        text = json.dumps(record, indent=1, default=str) + "\n"
        atomic_write_bytes(args.json, text.encode())


if __name__ == "__main__":
    main()
