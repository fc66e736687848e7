"""On-device training of fixed-point MLPs: export-c --with-training's C against Python, step by
step, on the host and on a Cortex-M0 under qemu, and the training firmware's footprint.

Usage::

    python benchmarks/fixed_point_training_export.py --out runs/fixed-train-export \\
        --model runs/frontier-mnist/runs/dataset=mnist+seed=1.npz [--steps 3] [--mcu-steps 2]

For each model file (saved by ``pocketnn train --preset frontier``, its training state
included): ``--steps`` training steps on its dataset's training images (batches of the file's
batch size from a seeded permutation, the file's lr_inv) run in the host build (gcc -O2) and
in Python's Trainer with truncating rounding, from the file's weights, velocities and step
count; after every step the C's weights, velocities and step count are compared with
Python's. The Cortex-M0 build is checked for floating point and run under qemu for
``--mcu-steps`` steps (checksums of every weight and velocity array, the step count). Last,
the footprint table of ``pocketnn export-c MODEL --with-training --report``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pocketnn.datasets import load_dataset
from pocketnn.export import export_c, footprint_report
from pocketnn.export.footprint import (
    HARNESS_DIR,
    build_firmware,
    find_float_usage,
    harness_defines,
    run_qemu,
)
from pocketnn.io.model_file import load_model_file

# The tests' own drivers and Python reference: what is measured here is what they check.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_export_c import checksum_records, mcu_data_header, parse_mcu_output  # noqa: E402
from test_export_c_fixed_training import (  # noqa: E402
    compile_training,
    host_steps,
    python_steps,
)


def check(path: Path, workdir: Path, n_steps: int, mcu_steps: int) -> None:
    training = load_model_file(path).training
    data = load_dataset(training["dataset"])
    batch, lr_inv = training["batch_size"], training["lr_inv"]
    order = np.random.default_rng(0).permutation(len(data.train_labels))
    steps = [
        (
            data.train_images[order[s * batch : (s + 1) * batch]],
            data.train_labels[order[s * batch : (s + 1) * batch]].astype(np.int64),
            lr_inv,
        )
        for s in range(n_steps)
    ]
    expected = python_steps(path, steps)
    exe = compile_training(path, workdir / "host")
    equal = 0
    for k in range(1, n_steps + 1):
        results, params, velocities, steps_done = host_steps(exe, path, steps[:k])
        want = expected[k - 1]
        same = results == [e[0] for e in expected[:k]] and steps_done == want[3]
        arrays = zip(params + velocities, want[1] + want[2])
        equal += same and all(np.array_equal(c, py) for c, py in arrays)
    print(
        f"{path.name}: {n_steps} training steps of {batch} {training['dataset']} images, "
        f"lr_inv {lr_inv}: host C equal to Python (every weight, velocity and the step count) "
        f"after {equal} of {n_steps} steps; correct counts {[e[0] for e in expected]}"
    )
    mcu = workdir / "qemu"
    mcu.mkdir(parents=True, exist_ok=True)
    mcu_data_header(mcu / "mcu_data.h", data.test_images[:20], steps[:mcu_steps], n_after=20)
    _, source = export_c(path, mcu, "net", with_training=True)
    elf = build_firmware(
        [source],
        [HARNESS_DIR / "mcu_main.c", HARNESS_DIR / "runtime.c"],
        mcu / "mcu.elf",
        [mcu],
        harness_defines("net", True, with_state=True),
    )
    floats = find_float_usage(elf)
    out = parse_mcu_output(run_qemu(elf, timeout=600))
    _, params, velocities, steps_done = expected[mcu_steps - 1]
    same = out["P"] == checksum_records(params + velocities) and out["N"] == [[steps_done]]
    print(
        f"{path.name}: Cortex-M0 training build, floating point: {floats or 'none'}; under qemu "
        f"{mcu_steps} steps, every weight and velocity checksum and the step count "
        f"{'equal to' if same else 'DIFFERENT from'} Python's (stack {out['STACK'][0][0]} bytes)"
    )
    print(f"pocketnn export-c {path} --out DIR --with-training --report")
    print(footprint_report(path, "net", with_training=True, label=path.name))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/fixed-train-export"))
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--mcu-steps", type=int, default=2)
    args = parser.parse_args()
    for i, path in enumerate(args.model):
        check(path, args.out / f"model{i}", args.steps, args.mcu_steps)


if __name__ == "__main__":
    main()
