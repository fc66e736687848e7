"""Deploying fixed-point networks: export-c's C against Python on all MNIST test images, on
a Cortex-M0 under qemu, and the firmware's footprint.

Usage::

    python benchmarks/fixed_point_export.py --out runs/fixed-export [--model cnn.npz ...]

Models: the two of tests/test_export_c_fixed.py (a fixed-point CNN
``c8k5p1-p2-c16k3s2p1-a2-f32-10`` and MLP ``784-100-50-10``, each trained one epoch on
1,600 MNIST images with the ``cnn`` preset's recipe), and any ``--model`` file, e.g. one
trained by ``pocketnn train --dataset mnist --preset cnn``. For each: how many of the 10,000
test images get exactly Python's scores from the host build (gcc -O2), and from the
Cortex-M0 build under qemu on ``--mcu-images`` images, whether that build holds any
floating point, and the footprint table of ``pocketnn export-c MODEL --report``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import pocketnn
from pocketnn.datasets import load_dataset
from pocketnn.export import export_c, footprint_report
from pocketnn.export.footprint import find_float_usage

# The tests' own model recipe and harness drivers: what is measured here is what they check.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_export_c import compile_host, host_predict  # noqa: E402
from test_export_c_cnn import mcu_firmware, run_mcu  # noqa: E402
from test_export_c_fixed import CNN_ARCH, MLP_ARCH, TRAIN_IMAGES, train_fixed_point  # noqa: E402


def check(path: Path, label: str, workdir: Path, data, mcu_images: int) -> None:
    model = pocketnn.load(path)
    images, labels = data.test_images, data.test_labels
    start = time.perf_counter()
    expected = model.scores(images)
    python_seconds = time.perf_counter() - start
    _, source = export_c(path, workdir / "host", "net")
    exe = compile_host(source, workdir / "host", "net")
    start = time.perf_counter()
    scores, classes = host_predict(exe, images, model.n_classes)
    c_seconds = time.perf_counter() - start
    equal = int(np.all(scores == expected, axis=1).sum())
    same_class = int((classes == np.argmax(expected, axis=1)).sum())
    print(
        f"{label}: test accuracy {(classes == labels).mean():.2%}; host C scores equal to "
        f"Python's on {equal:,} of {len(images):,} test images, classes on {same_class:,} "
        f"(Python {python_seconds:.1f} s, C {c_seconds:.1f} s for the pass, wall time)"
    )
    few = images[:mcu_images]
    elf = mcu_firmware(path, workdir / "qemu", few)
    floats = find_float_usage(elf)
    rows, stack = run_mcu(elf)
    mcu_equal = int(np.all(rows[:, 1:] == expected[:mcu_images], axis=1).sum())
    print(
        f"{label}: Cortex-M0 build, floating point: {floats or 'none'}; under qemu, scores "
        f"equal to Python's on {mcu_equal} of {mcu_images} images (stack {stack} bytes)"
    )
    print(f"pocketnn export-c {path} --out DIR --report")
    print(footprint_report(path, "net", with_training=False, label=label))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/fixed-export"))
    parser.add_argument("--model", type=Path, action="append", default=[])
    parser.add_argument("--mcu-images", type=int, default=300)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("mnist")
    models = []
    for kind, arch, shape in (("cnn", CNN_ARCH, (1, 28, 28)), ("mlp", MLP_ARCH, (784,))):
        path = args.out / f"fixed_{kind}.npz"
        train_fixed_point(data, arch, shape).save(path)
        models.append((path, f"fixed-point {arch} ({TRAIN_IMAGES:,} training images)"))
    models += [(path, path.name) for path in args.model]
    for i, (path, label) in enumerate(models):
        check(path, label, args.out / f"model{i}", data, args.mcu_images)


if __name__ == "__main__":
    main()
