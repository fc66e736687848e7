"""Benchmark pocketnn's engines against each other and against peers, all in one run.

Usage (from the repository root; the two variables are unset for this command only, see
docs/performance.md; PyTorch is optional: ``pip install torch==2.13.0``)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src \\
        python benchmarks/bench.py --json bench.json

The machine is shared and noisy (wall times move 30-50 % from one hour to the next), so
every figure that is compared is measured in this run, interleaved: each round trains the
same slice of the epoch with every method in turn (the order alternating from round to
round), and a method's figure is its fastest slice (noise only ever adds time), scaled to
60,000 samples. One thread: process CPU time; two threads: wall time (CPU time would add
the threads up), with the one-thread wall time beside it. Only ratios taken in one run are
meaningful; the absolute seconds move with the machine's load.

Methods, on the paper's networks (MNIST 784-100-50-10 and Fashion-MNIST
784-200-100-50-10, DFA, batch 20):

* pocketnn's engines (``compiled`` on 1 and 2 threads, ``fused``, ``blas``, ``int``);
* PyTorch float32 (when installed): the same MLP, tanh, SGD, batch 20, 1 and 2 threads;
* the native C baseline: pocketnn's own generated C training step (``pocketnn export-c
  --with-training``), built with the host's gcc ``-O3 -march=native`` in this run and
  driven over the same slices (``c_baseline.py``); its bits are checked against the
  ``compiled`` engine's first.

Also: the test pass (10,000 images) per engine, interleaved the same way; the peak RSS of a
whole ``pocketnn train --epochs 1`` per engine; the cold start of the default engine (first
epoch in a fresh process, kernels cached as ``scripts/setup.sh`` leaves them, against its
second epoch); a sweep over widths and batch sizes. Figures recorded elsewhere (the C++
reference's) are printed apart, labelled with their source, never in the measured columns.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from c_baseline import CFLAGS, CBaseline  # noqa: E402

from pocketnn import Trainer, build_mlp, configure  # noqa: E402
from pocketnn.core.context import DEFAULT_ENGINE, ENGINES, HAS_NUMBA  # noqa: E402
from pocketnn.datasets import load_dataset  # noqa: E402
from pocketnn.io.atomic import atomic_write_bytes  # noqa: E402

PAPER_NETS = {"mnist": [784, 100, 50, 10], "fashion-mnist": [784, 200, 100, 50, 10]}
REFERENCE = {  # recorded, not measured here
    "source": "docs/performance.md: the C++ reference, one core, -O3, measured in an earlier run",
    "mnist": {"epoch_s": 12.8, "test_s": 1.1, "rss_mb": 355},
    "fashion-mnist": {"epoch_s": 45.0, "test_s": 4.5, "rss_mb": 501},
}
TARGETS = {"epoch_vs_fused": 3.0, "test_vs_fused": 2.0, "cold_start": 1.5, "rss_mb": 150}
WIDTHS, BATCHES = (100, 400, 1600), (20, 100, 500)


def machine() -> dict:
    """What the figures were measured on."""
    info = {
        "cpu": platform.processor() or platform.machine(),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_average_start": os.getloadavg(),
        "openblas_env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
        "c_baseline_flags": " ".join(CFLAGS),
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
        gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=True)
        info["gcc"] = gcc.stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


class Clock:
    """Process CPU time and wall time of a block, kept as the fastest seen."""

    def __init__(self) -> None:
        self.cpu = self.wall = float("inf")

    def time(self, fn) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        self.add(time.process_time() - cpu, time.perf_counter() - wall)

    def add(self, cpu: float, wall: float) -> None:
        self.cpu, self.wall = min(self.cpu, cpu), min(self.wall, wall)


class Engine:
    """A pocketnn engine training its own model slice after slice."""

    def __init__(self, engine: str, threads: int, dims, x, y):
        self.engine, self.threads, self.x, self.y = engine, threads, x, y
        with configure(engine=engine, threads=threads):  # compile or load kernels first
            Trainer(build_mlp(dims)).train_epoch(x[:20], y[:20])
        self.trainer = Trainer(build_mlp(dims), seed=0)
        self.clock = Clock()

    def run(self, part: slice, lr_inv: int) -> None:
        with configure(engine=self.engine, threads=self.threads):
            self.clock.time(lambda: self.trainer.train_epoch(self.x[part], self.y[part]))


class Torch:
    """The same MLP in PyTorch: float32, tanh, SGD, cross-entropy."""

    def __init__(self, threads: int, dims, x, y):
        import torch

        self.torch, self.threads = torch, threads
        torch.manual_seed(0)
        layers = []
        for i, (n_in, n_out) in enumerate(zip(dims, dims[1:])):
            layers.append(torch.nn.Linear(n_in, n_out))
            if i < len(dims) - 2:
                layers.append(torch.nn.Tanh())
        self.net = torch.nn.Sequential(*layers)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.01)
        self.loss = torch.nn.CrossEntropyLoss()
        self.x = torch.from_numpy(x).float().div_(255)
        self.y = torch.from_numpy(y.astype(np.int64))
        self.clock = Clock()

    def epoch(self, part: slice) -> None:
        order = self.torch.randperm(part.stop - part.start) + part.start
        for s in range(0, order.numel(), 20):
            idx = order[s : s + 20]
            self.opt.zero_grad(set_to_none=True)
            self.loss(self.net(self.x[idx]), self.y[idx]).backward()
            self.opt.step()

    def run(self, part: slice, lr_inv: int) -> None:
        saved = self.torch.get_num_threads()
        self.torch.set_num_threads(self.threads)
        try:
            self.clock.time(lambda: self.epoch(part))
        finally:
            self.torch.set_num_threads(saved)


class Native:
    """The generated C training step, in its child process."""

    def __init__(self, c: CBaseline):
        self.c, self.clock = c, Clock()

    def run(self, part: slice, lr_inv: int) -> None:
        cpu, wall, _ = self.c.train(part.start, part.stop - part.start, lr_inv)
        self.clock.add(cpu, wall)


def c_baseline(dims, x, y, work: Path) -> tuple[CBaseline, bool]:
    """The C baseline of a fresh paper network, and whether its first 1000 samples leave
    exactly the weights the compiled engine computes from the same model and order."""
    model = build_mlp(dims)
    trainer = Trainer(model, seed=0)
    trainer.save(work / "model.npz")
    c = CBaseline(work / "model.npz", x, y, np.arange(len(x)), work)
    c.train(0, 1000, 1000)
    got = c.parameters([(p.shape, p.dtype) for layer in model.layers for p in (layer.W, layer.b)])
    check = Trainer.load(work / "model.npz", sample_order=[np.arange(1000)], engine="compiled")
    check.train_epoch(x[:1000], y[:1000])
    want = [p for layer in check.model.layers for p in (layer.W, layer.b)]
    return c, all(np.array_equal(a, b) for a, b in zip(got, want))


def epochs(args, name: str, data, work: Path) -> dict:
    """Every method's epoch on one dataset, interleaved slice by slice."""
    dims, x, y = PAPER_NETS[name], data.train_images, data.train_labels
    methods: dict[str, object] = {}
    for engine in args.engines:
        for threads in (1, 2) if engine == "compiled" else (1,):
            methods[f"{engine}, {threads} thread{'s' * (threads > 1)}"] = Engine(
                engine, threads, dims, x, y
            )
    try:
        import torch  # noqa: F401

        for threads in (1, 2):
            methods[f"torch float32, {threads} thread{'s' * (threads > 1)}"] = Torch(
                threads, dims, x, y
            )
    except ImportError:
        pass
    c, same_bits = c_baseline(dims, x, y, work)
    methods["C baseline (export-c, gcc)"] = Native(c)
    size = args.slice
    labels = list(methods)
    for r in range(args.rounds):
        part = slice(
            (1000 + r * size) % (len(x) - size), (1000 + r * size) % (len(x) - size) + size
        )
        lr_inv = 1000 << ((r + 1) // 10)  # as the engines' trainers, one "epoch" a slice
        for label in labels if r % 2 == 0 else labels[::-1]:
            methods[label].run(part, lr_inv)
    c.close()
    scale = len(x) / size
    out = {
        label: {"cpu_s": m.clock.cpu * scale, "wall_s": m.clock.wall * scale}
        for label, m in methods.items()
    }
    return {"methods": out, "c_baseline_same_bits": same_bits, "slice": size, "rounds": args.rounds}


def test_passes(args, name: str, data) -> dict:
    """Every engine's pass over the 10,000 test images, interleaved."""
    model = build_mlp(PAPER_NETS[name])
    with configure(engine="compiled"):
        Trainer(model, seed=0).train_epoch(data.train_images[:2000], data.train_labels[:2000])
    runs = [(e, t) for e in args.engines for t in ((1, 2) if e == "compiled" else (1,))]
    clocks = {run: Clock() for run in runs}
    for engine, threads in runs:
        with configure(engine=engine, threads=threads):
            model.scores(data.test_images[:100])
    for r in range(args.rounds):
        for engine, threads in runs if r % 2 == 0 else runs[::-1]:
            with configure(engine=engine, threads=threads):
                clocks[engine, threads].time(lambda: model.scores(data.test_images))
    return {
        f"{e}, {t} thread{'s' * (t > 1)}": {"cpu_s": clocks[e, t].cpu, "wall_s": clocks[e, t].wall}
        for e, t in runs
    }


def peak_rss_mb(engine: str, dataset: str) -> float:
    """Peak RSS of a whole ``pocketnn train --epochs 1`` run (train, test, save) in a child."""
    code = (  # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent
        "import sys\n"
        "from pocketnn.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"
        "sys.exit(rc)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        args = ["--engine", engine, "train", "--dataset", dataset, "--epochs", "1"]
        args += ["--quiet", "--out", str(Path(tmp) / "m.npz")]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        out = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env
        )
    if out.returncode != 0:
        raise RuntimeError(f"training run failed: {out.stderr.strip()}")
    return int(out.stdout.split()[-1]) / 1024


COLD = """\
import time, sys
from pocketnn import Trainer, build_mlp, configure
from pocketnn.datasets import load_dataset
data = load_dataset("mnist", verbose=False)
trainer = Trainer(build_mlp([784, 100, 50, 10]), seed=1)
with configure(engine=sys.argv[1]):
    for _ in range(3):
        start = time.perf_counter()
        trainer.train_epoch(data.train_images, data.train_labels)
        print(time.perf_counter() - start)
"""


def cold_start(engine: str, kernel_cache: str | None) -> dict:
    """Wall seconds of epochs 1, 2 and 3 in a fresh process (MNIST): the first pays for
    loading (or building) the engine's compiled code."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    if kernel_cache is not None:
        env["POCKETNN_KERNELS"] = kernel_cache
    run = subprocess.run(
        [sys.executable, "-c", COLD, engine], capture_output=True, text=True, env=env, check=True
    )
    first, *later = (float(v) for v in run.stdout.split())
    return {"first_s": first, "later_s": min(later), "ratio": first / min(later)}


def sweep(args, x: np.ndarray, y: np.ndarray) -> dict:
    """Epoch seconds (CPU, fastest of 2 slices, extrapolated) over widths and batch sizes."""
    steps = 50
    out: dict = {
        "note": f"fastest of 2 slices of {steps} steps, CPU time, scaled to a 60000-sample "
        "epoch; overflow='wrap' as in the reference, since wide layers and large batches "
        "leave int32"
    }
    points = [(w, 20) for w in WIDTHS] + [(100, b) for b in BATCHES if b != 20]
    engines = [e for e in ("compiled", "fused") if e in args.engines]
    for width, batch in points:
        dims, n = [784, width, 50, 10], steps * batch
        key = f"784-{width}-50-10 batch {batch}"
        out[key] = {}
        for engine in engines:
            with configure(engine=engine, overflow="wrap"):
                Trainer(build_mlp(dims), batch_size=batch).train_epoch(x[:batch], y[:batch])
                trainer = Trainer(build_mlp(dims), batch_size=batch, seed=0)
                clock = Clock()
                for part in (slice(0, n), slice(n, 2 * n)):
                    clock.time(lambda t=trainer, p=part: t.train_epoch(x[p], y[p]))
            out[key][engine] = clock.cpu * len(x) / n
        try:
            torch_run = Torch(1, dims, x, y)
            for r in range(2):
                torch_run.run(slice(r * n, (r + 1) * n), 0)
            out[key]["torch"] = torch_run.clock.cpu * len(x) / n
        except ImportError:
            pass
    return out


def run(args: argparse.Namespace) -> dict:
    report: dict = {"machine": machine(), "reference_recorded": REFERENCE, "datasets": {}}
    data = {name: load_dataset(name, verbose=False) for name in args.datasets}
    with tempfile.TemporaryDirectory() as tmp:
        for name, d in data.items():
            work = Path(tmp) / name
            work.mkdir()
            print(f"  {name}: epochs ...", flush=True)
            report["datasets"][name] = {
                "epoch": epochs(args, name, d, work),
                "test": test_passes(args, name, d),
            }
            if not args.no_rss:
                print(f"  {name}: peak RSS ...", flush=True)
                report["datasets"][name]["peak_rss_mb"] = {
                    engine: peak_rss_mb(engine, name) for engine in args.engines
                }
        print("  cold start ...", flush=True)
        report["cold_start"] = {
            "engine": DEFAULT_ENGINE,
            "kernels_cached": cold_start(DEFAULT_ENGINE, None),
        }
        if DEFAULT_ENGINE == "compiled":
            report["cold_start"]["empty_kernel_cache"] = cold_start("compiled", tmp + "/kernels")
    if not args.no_sweep:
        print("  sweep ...", flush=True)
        mnist = data.get("mnist") or next(iter(data.values()))
        report["sweep"] = sweep(args, mnist.train_images, mnist.train_labels)
    report["machine"]["load_average_end"] = os.getloadavg()
    return report


def ratio(a: float, b: float) -> str:
    return f"{b / a:5.2f}x"


def table(report: dict) -> str:
    """The report as text tables."""
    m = report["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['nproc']} cores, Python {m['python']}, numpy {m['numpy']}, "
        f"torch {m['torch']}, {m.get('gcc', 'gcc ?')}",
        f"load average at start {m['load_average_start']}, at end {m['load_average_end']}",
    ]
    for name, r in report["datasets"].items():
        e = r["epoch"]
        methods = e["methods"]
        ours = methods["compiled, 1 thread"]
        lines += [
            "",
            f"{name} {'-'.join(map(str, PAPER_NETS[name]))}, DFA, batch 20: seconds per "
            f"60,000-sample epoch, fastest of {e['rounds']} interleaved {e['slice']}-sample "
            "slices",
            f"{'method':34s} {'CPU s':>7s} {'wall s':>7s}   compiled on as many threads is",
        ]
        ours2 = methods["compiled, 2 threads"]
        for label, t in methods.items():
            two = "2 threads" in label
            cpu = "-" if two else f"{t['cpu_s']:.3f}"
            cmp = (
                f"{ratio(ours2['wall_s'], t['wall_s'])} faster (wall)"
                if two
                else f"{ratio(ours['cpu_s'], t['cpu_s'])} faster (CPU)"
            )
            lines.append(f"{label:34s} {cpu:>7s} {t['wall_s']:7.3f}   {cmp}")
        lines.append(
            f"compiled, 2 threads against 1 thread (wall): {ours['wall_s'] / ours2['wall_s']:.2f}x"
            f"; the C baseline gives the compiled engine's bits: {e['c_baseline_same_bits']}"
        )
        lines += ["", f"{name}: one pass over the 10,000 test images, fastest of the rounds"]
        test_ours = r["test"]["compiled, 1 thread"]
        for label, t in r["test"].items():
            two = "2 threads" in label
            cpu = "-" if two else f"{t['cpu_s']:.4f}"
            cmp = (
                f"2 threads: {test_ours['wall_s'] / t['wall_s']:.2f}x the 1-thread speed (wall)"
                if two
                else f"{ratio(test_ours['cpu_s'], t['cpu_s'])} faster (CPU)"
            )
            lines.append(f"{label:34s} {cpu:>7s} {t['wall_s']:7.4f}   {cmp}")
        if "peak_rss_mb" in r:
            rss = ", ".join(f"{k} {v:.0f} MB" for k, v in r["peak_rss_mb"].items())
            lines.append(f"peak RSS of a whole `pocketnn train --epochs 1`: {rss}")
    cold = report["cold_start"]
    c = cold["kernels_cached"]
    lines += [
        "",
        f"cold start ({cold['engine']}, MNIST, wall): first epoch in a fresh process "
        f"{c['first_s']:.3f} s, later {c['later_s']:.3f} s ({c['ratio']:.2f}x), kernels "
        "cached as setup leaves them",
    ]
    if "empty_kernel_cache" in cold:
        c = cold["empty_kernel_cache"]
        lines.append(
            f"  from an empty kernel cache (builds them): first {c['first_s']:.2f} s, later "
            f"{c['later_s']:.3f} s"
        )
    ref = report["reference_recorded"]
    lines += ["", f"Recorded elsewhere, not measured in this run ({ref['source']}):"]
    for name in PAPER_NETS:
        if name in ref:
            f = ref[name]
            lines.append(
                f"  C++ reference {name}: epoch {f['epoch_s']} s, test pass {f['test_s']} s, "
                f"peak RSS {f['rss_mb']} MB"
            )
    if "sweep" in report:
        s = report["sweep"]
        lines += ["", f"scaling, seconds per epoch ({s['note']}):"]
        for key, row in s.items():
            if key != "note":
                cells = "  ".join(f"{k} {v:7.2f}" for k, v in row.items())
                lines.append(f"  {key:26s} {cells}")
    lines += ["", *targets(report)]
    return "\n".join(lines)


def targets(report: dict) -> list[str]:
    """The issue's targets, each marked met or missed with the measured ratio."""
    rows = []

    def mark(ok: bool, text: str) -> None:
        rows.append(f"[{'met ' if ok else 'MISS'}] {text}")

    for name, r in report["datasets"].items():
        methods, test = r["epoch"]["methods"], r["test"]
        ours = methods["compiled, 1 thread"]["cpu_s"]
        if "fused, 1 thread" in methods:
            x = methods["fused, 1 thread"]["cpu_s"] / ours
            mark(x >= TARGETS["epoch_vs_fused"], f"{name} epoch {x:.2f}x faster than fused (>= 3x)")
            x = test["fused, 1 thread"]["cpu_s"] / test["compiled, 1 thread"]["cpu_s"]
            mark(
                x >= TARGETS["test_vs_fused"],
                f"{name} test pass {x:.2f}x faster than fused (>= 2x)",
            )
        if "peak_rss_mb" in r and DEFAULT_ENGINE in r["peak_rss_mb"]:
            rss = r["peak_rss_mb"][DEFAULT_ENGINE]
            mark(
                rss <= TARGETS["rss_mb"], f"{name} peak RSS ({DEFAULT_ENGINE}) {rss:.0f} MB <= 150"
            )
    cold = report["cold_start"]["kernels_cached"]["ratio"]
    mark(
        cold <= TARGETS["cold_start"], f"first epoch after setup {cold:.2f}x a later one (<= 1.5x)"
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = [e for e in ENGINES if e != "fused" or HAS_NUMBA]
    p.add_argument("--engines", default=",".join(default), help="comma-separated engines")
    p.add_argument("--datasets", default="mnist,fashion-mnist")
    p.add_argument("--rounds", type=int, default=8, help="interleaved rounds")
    p.add_argument("--slice", type=int, default=3000, help="samples per timed slice")
    p.add_argument("--no-rss", action="store_true", help="skip the whole-run memory runs")
    p.add_argument("--no-sweep", action="store_true", help="skip the width and batch sweep")
    p.add_argument("--json", help="write the report to this file")
    args = p.parse_args(argv)
    args.engines = [e for e in args.engines.split(",") if e]
    args.datasets = [d for d in args.datasets.split(",") if d]
    if "compiled" not in args.engines:
        p.error("the compiled engine is the one every ratio is taken against")
    report = run(args)
    print(table(report))
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
