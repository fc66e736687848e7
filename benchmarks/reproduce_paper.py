"""Reproduce the paper's two results over several seeds and print the accuracy table.

Usage::

    python benchmarks/reproduce_paper.py --out runs/paper            # train, then tabulate
    python benchmarks/reproduce_paper.py --out runs/paper --table-only

Each run is the ``pocketnn train`` command printed before it starts, with the preset's
epoch count (``paper``: MNIST 50, Fashion-MNIST 25, the lengths of the reference's runs).
The table reads the JSON-lines logs written next to each model.
Percentages are formatted here, at the edge; the logs hold integer counts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

PAPER = {"mnist": 96.98, "fashion-mnist": 87.70}
SHOW = {"mnist": (1, 2, 3, 5, 10, 20, 30, 40, 50), "fashion-mnist": (1, 2, 3, 5, 10, 15, 20, 25)}


def run_command(dataset: str, preset: str, seed: int, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pocketnn.cli",
        "train",
        "--dataset",
        dataset,
        "--preset",
        preset,
        "--seed",
        str(seed),
        "--out",
        str(out / f"{dataset}-{preset}-seed{seed}.npz"),
        "--quiet",
        "--force",
    ]


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(out: Path, dataset: str, preset: str, seeds: list[int]) -> str:
    logs = {s: read_log(out / f"{dataset}-{preset}-seed{s}.log.jsonl") for s in seeds}

    def acc(record: dict) -> float:
        return 100 * record["test_correct"] / record["test_total"]

    def cell(values: list[float]) -> str:
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        return f"{statistics.mean(values):.2f}{spread} ({min(values):.2f}–{max(values):.2f})"

    rows = [
        f"| epochs | test accuracy %, mean ± sd (min–max) over seeds {seeds} | paper |",
        "|---:|---|---:|",
    ]
    n = min(len(log) for log in logs.values())
    for e in SHOW[dataset]:
        if e <= n:
            rows.append(f"| {e} | {cell([acc(logs[s][e - 1]) for s in seeds])} | |")
    best = [max(acc(r) for r in logs[s][:n]) for s in seeds]
    best_at = [max(logs[s][:n], key=acc)["epoch"] for s in seeds]
    rows.append(f"| best of 1–{n} | {cell(best)}, at epochs {best_at} | {PAPER[dataset]:.2f} |")
    secs = statistics.mean(r["seconds"] for s in seeds for r in logs[s][:n])
    rows.append(f"\nmean training time per epoch: {secs:.2f} s")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/paper"))
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    p.add_argument("--preset", default="paper")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for dataset in args.datasets:
        if not args.table_only:
            for seed in args.seeds:
                cmd = run_command(dataset, args.preset, seed, args.out)
                print("$ " + " ".join(cmd[1:]), flush=True)
                start = time.perf_counter()
                subprocess.run(cmd, check=True)
                print(f"  wall time {time.perf_counter() - start:.0f} s", flush=True)
        print(f"\n### {dataset}, preset {args.preset}\n")
        print(table(args.out, dataset, args.preset, args.seeds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
