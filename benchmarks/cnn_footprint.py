"""Deploying CNNs: the C export's footprint on a Cortex-M0, and whether it fits a Pico.

Usage::

    python benchmarks/cnn_footprint.py --out runs/cnn-footprint

Three models, each saved into ``--out`` and measured as ``pocketnn export-c MODEL --report``
does (arm-none-eabi-gcc -Os for Cortex-M0, arm-none-eabi-size, GCC's call graph for the
stack):

* the test CNN of tests/test_export_c_cnn.py (``c8k5p1-p2-c16k3s2p1-a2-f32-10``), trained
  300 backprop steps on MNIST (seed 1), with its test accuracy;
* the issue's preset-size CNN (``c32k3-c32k3-p2-c64k3-p2-f256-10``), initialised and
  calibrated but not trained (an epoch takes about half an hour in Python here): the
  footprint depends on the shapes and on the weights' C type (int16 for any weights within
  the builder's clamps), not on the values. Its C is checked against Python on
  ``--check-images`` test images on the host and on 5 under qemu;
* a CNN too big for the Pico's RAM (``c384k3-a7-10``), to show the verdict.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import pocketnn
from pocketnn.datasets import load_dataset
from pocketnn.export import footprint_report
from pocketnn.export.footprint import find_float_usage
from pocketnn.nn.architecture import build

# The tests' own model recipe and harness drivers: what is measured here is what they check.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_export_c import build_host, host_predict  # noqa: E402
from test_export_c_cnn import TEST_ARCH, mcu_firmware, run_mcu, train_cnn  # noqa: E402

PRESET_ARCH = "c32k3-c32k3-p2-c64k3-p2-f256-10"
BIG_ARCH = "c384k3-a7-10"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/cnn-footprint"))
    parser.add_argument("--check-images", type=int, default=200)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("mnist")

    start = time.perf_counter()
    trainer = train_cnn(data, TEST_ARCH, steps=300)
    test_path = args.out / "test_cnn.npz"
    trainer.save(test_path)
    correct = trainer.model.count_correct(data.test_images, data.test_labels)
    seconds = time.perf_counter() - start
    print(
        f"{TEST_ARCH}: {correct} of {len(data.test_labels)} MNIST test images correct "
        f"after 300 steps ({seconds:.0f} s to train and score)"
    )

    preset_path = args.out / "preset_cnn.npz"
    train_cnn(data, PRESET_ARCH, steps=0).save(preset_path)
    model = pocketnn.load(preset_path)
    images = data.test_images[: args.check_images]
    exe = build_host(preset_path, args.out / "preset-host", "net")
    host_ok = np.array_equal(host_predict(exe, images, 10)[0], model.scores(images))
    few = data.test_images[:5]
    start = time.perf_counter()
    elf = mcu_firmware(preset_path, args.out / "preset-qemu", few)
    if find_float_usage(elf):
        raise SystemExit(f"{elf}: floating point found: {find_float_usage(elf)}")
    rows, stack = run_mcu(elf)
    qemu_seconds = time.perf_counter() - start
    qemu_ok = np.array_equal(rows[:, 1:], model.scores(few))
    print(
        f"{PRESET_ARCH}: C == Python on {len(images)} images on the host: {host_ok}; "
        f"on {len(few)} under qemu: {qemu_ok} (stack {stack} bytes; {qemu_seconds:.0f} s "
        "to build and run)"
    )

    big_path = args.out / "big_cnn.npz"
    pocketnn.save(big_path, build(BIG_ARCH, (1, 28, 28)))
    for label, path in (
        (f"{TEST_ARCH} (trained)", test_path),
        (f"{PRESET_ARCH} (preset size)", preset_path),
        (BIG_ARCH, big_path),
    ):
        print()
        print(f"pocketnn export-c {path} --out DIR --report")
        print(footprint_report(path, "net", with_training=False, label=label))


if __name__ == "__main__":
    main()
