"""Benchmark the exact integer engines: one command, a table on stdout, JSON on request.

Usage (from the repository root; the two variables are unset for this command only, see
docs/performance.md)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src \\
        python benchmarks/bench.py --json bench.json

For every engine it measures, on the paper's networks (MNIST 784-100-50-10 and
Fashion-MNIST 784-200-100-50-10, DFA, batch 20): seconds per training epoch and per pass
over the 10,000 test images, inference images per second, giga integer operations per
second, and the peak RSS of a whole ``pocketnn train --epochs 1`` run. In the same run it
measures the machine's float64 matrix-multiply throughput (the ceiling) and, when torch is
installed, the same MLP in PyTorch (float32, batch 20, same epoch). A sweep over hidden
widths and batch sizes shows how the cost grows; it trains on a slice of the epoch and
extrapolates, which the table says.
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

from pocketnn import Trainer, build_mlp, configure  # noqa: E402
from pocketnn.core.context import DEFAULT_ENGINE, ENGINES  # noqa: E402
from pocketnn.datasets import load_dataset  # noqa: E402
from pocketnn.engines.blas import single_thread_blas  # noqa: E402
from pocketnn.io.atomic import atomic_write_bytes  # noqa: E402

PAPER_NETS = {"mnist": [784, 100, 50, 10], "fashion-mnist": [784, 200, 100, 50, 10]}
REFERENCE = {  # the C++ reference, one core, -O3 (docs/performance.md)
    "mnist": {"epoch_s": 12.8, "test_s": 1.1, "rss_mb": 355},
    "fashion-mnist": {"epoch_s": 45.0, "test_s": 4.5, "rss_mb": 501},
}
TARGETS = {"epoch_s": 0.85, "test_s": 0.05, "rss_mb": 200, "int_speedup": 3, "fashion_s": 3.0}
WIDTHS, BATCHES = (100, 400, 1600), (20, 100, 500)


def integer_ops(dims: list[int], samples: int) -> int:
    """Integer operations (a multiply-add counts 2) of ``samples`` DFA training samples.

    Dense count, as the reference computes it: forward ``a @ W``, update ``a.T @ delta`` and
    the feedback ``e @ B`` of each hidden layer. The engines skip all-zero pixel columns, so
    they execute fewer: the figure is the work done per second as the reference counts it.
    """
    n_classes = dims[-1]
    macs = sum(2 * i * o for i, o in zip(dims, dims[1:]))
    macs += sum(n_classes * o for o in dims[1:-1])
    return 2 * macs * samples


def machine() -> dict:
    """What the figures were measured on."""
    info = {
        "cpu": platform.processor() or platform.machine(),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_average_start": os.getloadavg(),
        "openblas_env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {k: lib.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for lib in threadpool_info()
            if lib.get("user_api") == "blas"
        ]
    except ImportError:
        info["blas"] = "threadpoolctl not installed: BLAS threads not limited"
    return info


def float64_ceiling(n: int = 1024, repeats: int = 3) -> float:
    """The machine's float64 GEMM throughput on one thread, in giga operations per second."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n)), rng.random((n, n))
    with single_thread_blas():
        a @ b
        best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def train_seconds(dims, x, y, batch_size: int, samples: int) -> float:
    """Seconds of one epoch, timing ``samples`` of it and scaling to the full ``len(x)``.

    One untimed step first: the ``fused`` engine's one-off JIT compile or cache load (see
    :func:`fused_first_step_seconds`) is not part of an epoch.
    """
    Trainer(build_mlp(dims), batch_size=batch_size).train_epoch(x[:batch_size], y[:batch_size])
    model = build_mlp(dims)
    trainer = Trainer(model, batch_size=batch_size, seed=0)
    result = trainer.train_epoch(x[:samples], y[:samples])
    return result.seconds * len(x) / samples


def pass_seconds(dims, x, y, x_test, repeats: int = 3) -> float:
    """Best of ``repeats`` passes over ``x_test`` with a network trained briefly on ``x``."""
    model = build_mlp(dims)
    Trainer(model, seed=0).train_epoch(x[:2000], y[:2000])
    model.scores(x_test[:100])
    return min(_seconds(lambda: model.scores(x_test)) for _ in range(repeats))


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


def fused_first_step_seconds() -> dict | None:
    """Seconds of the first ``fused`` training step in a fresh process: JIT compile, cache load.

    The first child compiles into an empty numba cache directory; the second loads what the
    first cached. Both include importing numba.
    """
    if "fused" not in ENGINES or DEFAULT_ENGINE != "fused":
        return None
    code = (
        "import time, numpy as np\n"
        "from pocketnn import Trainer, build_mlp, configure\n"
        "x = np.random.default_rng(0).integers(0, 256, (20, 784)).astype(np.uint8)\n"
        "start = time.perf_counter()\n"
        "with configure(engine='fused'):\n"
        "    Trainer(build_mlp([784, 100, 50, 10])).train_epoch(x, np.arange(20) % 10)\n"
        "print(time.perf_counter() - start)\n"
    )
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), NUMBA_CACHE_DIR=cache)
        for label in ("compile_s", "cached_s"):
            run = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
            )
            out[label] = float(run.stdout.split()[-1])
    return out


def torch_epoch_seconds(dims, x, y, batch_size: int, samples: int, threads: int) -> float | None:
    """The same MLP in PyTorch (float32, tanh, SGD, batch ``batch_size``), per epoch."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(dims, dims[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(dims) - 2:
            layers.append(torch.nn.Tanh())
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    xt = torch.from_numpy(x[:samples]).float().div_(255)
    yt = torch.from_numpy(y[:samples].astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()
    order = torch.randperm(samples)
    start = time.perf_counter()
    for s in range(0, samples, batch_size):
        idx = order[s : s + batch_size]
        opt.zero_grad(set_to_none=True)
        loss_fn(net(xt[idx]), yt[idx]).backward()
        opt.step()
    seconds = time.perf_counter() - start
    torch.set_num_threads(saved)
    return seconds * len(x) / samples


def run(args: argparse.Namespace) -> dict:
    report: dict = {"machine": machine(), "quick": args.quick, "engines": {}, "sweep": {}}
    report["float64_gemm_gops"] = float64_ceiling()
    report["fused_first_step"] = fused_first_step_seconds()
    samples = 12000 if args.quick else None
    data = {name: load_dataset(name) for name in args.datasets}
    for engine in args.engines:
        with configure(engine=engine):
            row: dict = {}
            for name, d in data.items():
                dims, n = PAPER_NETS[name], samples or len(d.train_images)
                epoch = train_seconds(dims, d.train_images, d.train_labels, 20, n)
                test = pass_seconds(dims, d.train_images, d.train_labels, d.test_images)
                row[name] = {
                    "epoch_s": epoch,
                    "epoch_samples_timed": n,
                    "test_s": test,
                    "images_per_s": len(d.test_images) / test,
                    "gops": integer_ops(dims, len(d.train_images)) / epoch / 1e9,
                }
                print(f"  {engine:5s} {name:14s} epoch {epoch:6.2f} s  test {test:6.3f} s")
            if not args.no_rss:
                for name in data:
                    row[name]["peak_rss_mb"] = peak_rss_mb(engine, name)
            report["engines"][engine] = row
    mnist = data.get("mnist") or next(iter(data.values()))
    x, y = mnist.train_images, mnist.train_labels
    for threads in (1, 2):  # two threads on two busy cores can crawl: time a slice only
        n = samples or len(x) if threads == 1 else 6000
        t = torch_epoch_seconds([784, 100, 50, 10], x, y, 20, n, threads)
        report[f"torch_epoch_s_{threads}_threads"] = t
    report["sweep"] = sweep(args, x, y)
    report["machine"]["load_average_end"] = os.getloadavg()
    return report


def sweep(args: argparse.Namespace, x: np.ndarray, y: np.ndarray) -> dict:
    """Epoch seconds (extrapolated from a slice) over hidden widths and batch sizes."""
    steps = 50 if args.quick else 150
    out: dict = {
        "note": f"{steps} steps timed per point, scaled to a 60000-sample epoch; "
        "overflow='wrap' as in the reference, since wide layers and large batches leave int32"
    }
    points = [(w, 20) for w in WIDTHS] + [(100, b) for b in BATCHES if b != 20]
    for width, batch in points:
        dims, n = [784, width, 50, 10], min(len(x), steps * batch)
        key = f"784-{width}-50-10 batch {batch}"
        out[key] = {}
        for engine in args.engines:
            with configure(engine=engine, overflow="wrap"):
                out[key][engine] = train_seconds(dims, x, y, batch, n)
        out[key]["torch"] = torch_epoch_seconds(dims, x, y, batch, n, 1)
    return out


def table(report: dict) -> str:
    """The report as text tables."""
    m = report["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['nproc']} cores, numpy {m['numpy']}, BLAS {m['blas']}",
        f"load average at start {m['load_average_start']}, at end {m['load_average_end']}",
        f"float64 GEMM ceiling (1 thread, 1024^3): {report['float64_gemm_gops']:.1f} Gop/s",
    ]
    if report["quick"]:
        lines.append("--quick: epochs timed on 12000 samples and scaled to 60000")
    first = report.get("fused_first_step")
    if first:
        lines.append(
            f"fused engine, first step in a new process: {first['compile_s']:.1f} s with JIT "
            f"compilation, {first['cached_s']:.2f} s from numba's cache (numba import included)"
        )
    head = f"{'engine':8s} {'network':14s} {'epoch s':>8s} {'vs C++':>7s} {'test s':>7s}"
    head += f" {'img/s':>9s} {'Gop/s':>6s} {'RSS MB':>7s}"
    lines += ["", head, "-" * len(head)]
    for engine, row in report["engines"].items():
        for name, r in row.items():
            ref = REFERENCE[name]["epoch_s"]
            rss = f"{r['peak_rss_mb']:7.0f}" if "peak_rss_mb" in r else f"{'-':>7s}"
            lines.append(
                f"{engine:8s} {name:14s} {r['epoch_s']:8.2f} {ref / r['epoch_s']:6.1f}x "
                f"{r['test_s']:7.3f} {r['images_per_s']:9.0f} {r['gops']:6.1f} {rss}"
            )
    for name, ref in REFERENCE.items():
        lines.append(
            f"{'C++ ref':8s} {name:14s} {ref['epoch_s']:8.2f} {1:6.1f}x {ref['test_s']:7.3f} "
            f"{10000 / ref['test_s']:9.0f} {'':>6s} {ref['rss_mb']:7.0f}"
        )
    for threads in (1, 2):
        t = report.get(f"torch_epoch_s_{threads}_threads")
        shown = f"{t:8.2f}" if t is not None else "  (torch not installed)"
        slice_note = "" if threads == 1 else ", timed on 6000 samples"
        lines.append(
            f"{'torch':8s} {'mnist':14s} {shown}   float32, batch 20, {threads} thread(s)"
            + slice_note
        )
    sweep = report["sweep"]
    lines += ["", f"scaling, seconds per epoch ({sweep['note']}):"]
    for key, row in sweep.items():
        if key != "note":
            cells = "  ".join(f"{k} {v:7.2f}" for k, v in row.items() if v is not None)
            lines.append(f"  {key:26s} {cells}")
    lines += ["", *targets(report)]
    return "\n".join(lines)


def targets(report: dict) -> list[str]:
    """The issue's targets, each marked met or missed with the measured figure.

    The epoch targets are about the default engine (``fused`` when numba is installed).
    """
    rows = []
    default = report["engines"].get(DEFAULT_ENGINE, {})
    mnist = default.get("mnist")

    def mark(ok: bool, text: str) -> None:
        rows.append(f"[{'met ' if ok else 'MISS'}] {text}")

    if mnist:
        mark(
            mnist["epoch_s"] <= TARGETS["epoch_s"],
            f"MNIST epoch ({DEFAULT_ENGINE}) {mnist['epoch_s']:.2f} s <= 0.85",
        )
        mark(mnist["test_s"] <= TARGETS["test_s"], f"MNIST test pass {mnist['test_s']:.3f} <= 0.05")
        if "peak_rss_mb" in mnist:
            rss = mnist["peak_rss_mb"]
            mark(rss < TARGETS["rss_mb"], f"peak RSS {rss:.0f} MB < 200")
        torch_best = min(
            (t for t in (report.get(f"torch_epoch_s_{n}_threads") for n in (1, 2)) if t),
            default=None,
        )
        if torch_best is not None:
            mark(mnist["epoch_s"] < torch_best, f"faster than torch ({torch_best:.2f} s)")
    int_mnist = report["engines"].get("int", {}).get("mnist")
    if int_mnist:
        speedup = REFERENCE["mnist"]["epoch_s"] / int_mnist["epoch_s"]
        mark(speedup >= TARGETS["int_speedup"], f"int engine {speedup:.1f}x the reference >= 3x")
    fashion = default.get("fashion-mnist")
    if fashion:
        mark(
            fashion["epoch_s"] <= TARGETS["fashion_s"],
            f"Fashion epoch {fashion['epoch_s']:.2f} <= 3",
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated engines")
    p.add_argument("--datasets", default="mnist,fashion-mnist")
    p.add_argument("--quick", action="store_true", help="time slices of epochs, scale up")
    p.add_argument("--no-rss", action="store_true", help="skip the whole-run memory runs")
    p.add_argument("--json", help="write the report to this file")
    args = p.parse_args(argv)
    args.engines = [e for e in args.engines.split(",") if e]
    args.datasets = [d for d in args.datasets.split(",") if d]
    report = run(args)
    print(table(report))
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
