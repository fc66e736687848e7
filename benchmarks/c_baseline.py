"""The native C baseline of bench.py: pocketnn's own generated C training step, timed.

``pocketnn export-c MODEL --with-training --name base`` writes the C99 DFA step; it is
built with the host's gcc ``-O3 -march=native`` together with ``c_baseline.c``, which runs
it over an epoch's batches in a child process and reports the process CPU time of each
slice (``CLOCK_PROCESS_CPUTIME_ID``), so it can be interleaved with the in-process methods.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

DRIVER = Path(__file__).with_name("c_baseline.c")
CFLAGS = ("-O3", "-march=native", "-std=c99")


class CBaseline:
    """One training run of the generated C, from ``model_file`` (a model with its DFA
    feedback), over ``x[order]`` with labels ``y``."""

    def __init__(
        self, model_file: Path, x: np.ndarray, y: np.ndarray, order: np.ndarray, work: Path
    ):
        cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("gcc")
        if cc is None:
            raise RuntimeError("no C compiler for the native C baseline")
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
        export = [sys.executable, "-m", "pocketnn.cli", "export-c", str(model_file)]
        export += ["--out", str(work), "--name", "base", "--with-training"]
        subprocess.run(export, check=True, capture_output=True, env=env)
        self.command = [cc, *CFLAGS, "-I", str(work), "-o", str(work / "c_baseline")]
        self.command += [str(DRIVER), str(work / "base.c")]
        subprocess.run(self.command, check=True, capture_output=True)
        files = {"images": x, "labels": y.astype(np.uint8), "order": order.astype(np.int32)}
        for name, array in files.items():
            np.ascontiguousarray(array).tofile(work / f"{name}.bin")
        self.work = work
        self.child = subprocess.Popen(
            [str(work / "c_baseline"), *(str(work / f"{n}.bin") for n in files)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def train(self, start: int, count: int, lr_inv: int) -> tuple[float, float, int]:
        """Train ``order[start:start+count]``: (CPU seconds, wall seconds, correct count)."""
        self.child.stdin.write(f"train {start} {count} {lr_inv}\n")
        self.child.stdin.flush()
        cpu, wall, correct = self.child.stdout.readline().split()
        return int(cpu) / 1e9, int(wall) / 1e9, int(correct)

    def parameters(self, shapes_and_dtypes: list[tuple[tuple[int, ...], np.dtype]]) -> list:
        """Every parameter array of the C model now, in ``BASE_FOR_EACH_PARAM`` order."""
        path = self.work / "params.bin"
        self.child.stdin.write(f"dump {path}\n")
        self.child.stdin.flush()
        self.child.stdout.readline()
        raw, out, pos = path.read_bytes(), [], 0
        for shape, dtype in shapes_and_dtypes:
            size = int(np.prod(shape)) * np.dtype(dtype).itemsize
            out.append(np.frombuffer(raw[pos : pos + size], dtype=dtype).reshape(shape))
            pos += size
        return out

    def close(self) -> None:
        self.child.stdin.close()
        self.child.wait(timeout=60)
