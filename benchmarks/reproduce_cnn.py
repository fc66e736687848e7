"""Train the integer CNN preset over several seeds and print tables like the paper's.

Usage::

    python benchmarks/reproduce_cnn.py --out runs/cnn                 # train, then tabulate
    python benchmarks/reproduce_cnn.py --out runs/cnn --table-only    # from the logs
    python benchmarks/reproduce_cnn.py --out runs/cnn --resume        # continue killed runs

Each run is the ``pocketnn train --preset cnn`` command printed before it starts. The
preset holds out a validation split of the training images; the table gives the test
accuracy of the final epoch and of the epoch chosen on validation (never on test), and the
wall time of every run. Percentages are formatted here, at the edge; the logs (JSON lines
next to each model) hold integer counts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

NITRO_D = {"mnist": 99.45, "fashion-mnist": 93.66}  # VGG8B, best epoch read off the test set


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def percent(correct: int, total: int) -> float:
    return 100 * correct / total


def cell(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.2f}{spread} ({min(values):.2f}–{max(values):.2f})"


def table(out: Path, dataset: str, seeds: list[int], walls: dict[int, float]) -> str:
    logs = {s: read_log(out / f"{dataset}-cnn-seed{s}.log.jsonl") for s in seeds}
    final = [percent(log[-1]["test_correct"], log[-1]["test_total"]) for log in logs.values()]
    chosen = [max(log, key=lambda r: r["val_correct"]) for log in logs.values()]
    selected = [percent(r["test_correct"], r["test_total"]) for r in chosen]
    epochs = [len(log) for log in logs.values()]
    train_s = [sum(r["seconds"] for r in log) for log in logs.values()]
    rows = [
        f"| figure | test accuracy %, mean ± sd (min–max), seeds {seeds} | NITRO-D (best epoch) |",
        "|---|---|---:|",
        f"| final epoch ({epochs} epochs) | {cell(final)} | |",
        f"| validation-selected epoch ({[r['epoch'] for r in chosen]}) | {cell(selected)} | "
        f"{NITRO_D[dataset]:.2f} |",
        "",
        f"training time per run (s, summed epochs): {[round(t) for t in train_s]}",
    ]
    if walls:
        rows.append(f"wall time per run (s, whole command): {[round(walls[s]) for s in seeds]}")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/cnn"))
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--epochs", type=int, help="override the preset's epoch count")
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue the runs saved in --out")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets:
        walls: dict[int, float] = {}
        for seed in [] if args.table_only else args.seeds:
            model = args.out / f"{dataset}-cnn-seed{seed}.npz"
            cmd = [
                sys.executable,
                "-m",
                "pocketnn.cli",
                "train",
                "--dataset",
                dataset,
                "--preset",
                "cnn",
                "--seed",
                str(seed),
                "--out",
                str(model),
                "--quiet",
            ]
            cmd += ["--resume"] if args.resume and model.exists() else ["--force"]
            cmd += ["--epochs", str(args.epochs)] if args.epochs else []
            print("$ " + " ".join(cmd[1:]), flush=True)
            start = time.perf_counter()
            subprocess.run(cmd, check=True)
            walls[seed] = time.perf_counter() - start
        print(f"\n### {dataset}, preset cnn\n")
        print(table(args.out, dataset, args.seeds, walls), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
