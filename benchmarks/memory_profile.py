"""Where the resident memory of a training run goes, stage by stage.

    python benchmarks/memory_profile.py [--engine compiled|fused|blas|int]

Prints VmRSS and VmHWM (peak) from /proc/self/status after each stage of one MNIST
paper-network epoch with evaluation: interpreter + numpy, dataset, the engine's compiled
code (numba for fused, the C kernels for compiled), the first training step, the epoch,
the test pass.
"""

from __future__ import annotations

import argparse
import re


def rss_mb() -> tuple[int, int]:
    status = open("/proc/self/status").read()
    return tuple(
        int(re.search(rf"{k}:\s+(\d+)", status).group(1)) // 1024 for k in ("VmRSS", "VmHWM")
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", default=None)
    args = p.parse_args()
    stages = [("python", rss_mb())]
    import numpy as np  # noqa: F401

    import pocketnn
    from pocketnn.core.context import DEFAULT_ENGINE
    from pocketnn.datasets import load_dataset

    engine = args.engine or DEFAULT_ENGINE
    stages.append(("numpy + pocketnn", rss_mb()))
    data = load_dataset("mnist")
    stages.append(("MNIST loaded", rss_mb()))
    if engine == "fused":
        import pocketnn.engines.fused  # noqa: F401  (imports numba)

        stages.append(("numba imported", rss_mb()))
    if engine == "compiled":
        from pocketnn.engines.compiled.build import library

        library()
        stages.append(("C kernels loaded", rss_mb()))
    model = pocketnn.build_mlp([784, 100, 50, 10])
    trainer = pocketnn.Trainer(model, seed=1)
    with pocketnn.configure(engine=engine):
        trainer.step(data.train_images[:20], data.train_labels[:20])
        stages.append(("first step", rss_mb()))
        trainer.fit(data.train_images, data.train_labels, 1)
        stages.append(("one epoch", rss_mb()))
        model.count_correct(data.test_images, data.test_labels)
        stages.append(("test pass", rss_mb()))
    print(f"engine {engine}: MB resident now / peak so far")
    for name, (now, peak) in stages:
        print(f"  {name:18s} {now:5d} / {peak:5d}")


if __name__ == "__main__":
    main()
