"""Compare training and test-pass speed of this tree with another revision, in one process.

Usage (from the repository root)::

    git worktree add /tmp/baseline 381eb8f
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 PYTHONPATH=src \\
        python benchmarks/ab_compare.py --baseline /tmp/baseline/src --rounds 24

The machine this project runs on is shared and noisy: wall times of separate runs move by
30-50 %. So both versions run in the same process (the baseline package is copied under
another name), their epoch slices interleaved and alternating which goes first, and each
version's figure is the minimum process time per slice (noise only ever adds time). Both
train the paper networks with DFA, batch 20, from their own running state; the epoch time
is the best 1000-sample slice scaled to 60000 samples, the test pass 10,000 images.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

NETWORKS = (([784, 100, 50, 10], "mnist"), ([784, 200, 100, 50, 10], "fashion-mnist"))


def import_baseline(src: Path):
    """The baseline's ``pocketnn`` package, imported as ``pocketnn_baseline``."""
    root = Path(tempfile.mkdtemp(prefix="pocketnn-baseline-"))
    shutil.copytree(
        src / "pocketnn", root / "pocketnn_baseline", ignore=shutil.ignore_patterns("__pycache__")
    )
    sys.path.insert(0, str(root))
    return importlib.import_module("pocketnn_baseline")


def compare(packages: dict, engine: str, dims: list[int], data, rounds: int) -> dict:
    x, y = data.train_images, data.train_labels
    trainers, epoch, test = {}, {}, {}
    for tag, pkg in packages.items():
        with pkg.configure(engine=engine):  # compile or load the kernels before timing
            pkg.Trainer(pkg.build_mlp(dims)).train_epoch(x[:20], y[:20])
        trainers[tag] = pkg.Trainer(pkg.build_mlp(dims), seed=0)
        epoch[tag] = test[tag] = float("inf")
    for r in range(rounds):
        part = slice((r % 60) * 1000, (r % 60 + 1) * 1000)
        for tag in list(packages)[:: 1 if r % 2 == 0 else -1]:
            pkg, trainer = packages[tag], trainers[tag]
            with pkg.configure(engine=engine):
                start = time.process_time()
                trainer.train_epoch(x[part], y[part])
                epoch[tag] = min(epoch[tag], (time.process_time() - start) * 60)
                if r < 8:
                    start = time.process_time()
                    trainer.model.count_correct(data.test_images, data.test_labels)
                    test[tag] = min(test[tag], time.process_time() - start)
    return {"epoch": epoch, "test": test}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", required=True, type=Path, help="the other revision's src/")
    p.add_argument("--engines", default="compiled,fused,blas,int")
    p.add_argument("--rounds", type=int, default=24)
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import pocketnn
    from pocketnn.datasets import load_dataset

    packages = {"baseline": import_baseline(args.baseline), "this": pocketnn}
    print(
        f"{'engine':7s} {'network':14s} {'epoch s (base, this, ratio)':>30s} "
        f"{'test s (base, this, ratio)':>32s}"
    )
    for dims, name in NETWORKS:
        data = load_dataset(name, verbose=False)
        for engine in args.engines.split(","):
            r = compare(packages, engine, dims, data, args.rounds)
            e, t = r["epoch"], r["test"]
            print(
                f"{engine:7s} {name:14s} {e['baseline']:9.3f} {e['this']:9.3f} "
                f"{e['this'] / e['baseline']:9.3f}   {t['baseline']:9.4f} {t['this']:9.4f} "
                f"{t['this'] / t['baseline']:9.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
