"""Build generated C for a Cortex-M0 with arm-none-eabi-gcc, and measure what it costs.

Everything here drives the real GNU Arm toolchain (Debian: ``gcc-arm-none-eabi``,
``libnewlib-arm-none-eabi``) and, for running firmware, ``qemu-system-arm``; a missing tool
raises :class:`ToolError` naming the package to install (``.ci/install-arm.sh`` installs all).

* :func:`build_firmware` compiles C sources (the generated ones with the strict flags) and
  links them with the harness start-up code for ARMv6-M, soft float.
* :func:`find_float_usage` lists floating-point helper symbols and FPU instructions in an ELF.
* :func:`footprint_report` measures flash, RAM and stack of a model's inference-only and
  training builds.
* :func:`run_qemu` runs a firmware on QEMU's mps2-an385 board with semihosting output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import PocketnnError
from ..nn.model import Sequential
from .c import export_c
from .chips import fit_verdict

HARNESS_DIR = Path(__file__).parent / "harness"
"""Start-up code, linker script and test drivers shipped with pocketnn."""

ARM_CPU_FLAGS = ("-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft")
STRICT_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
HARNESS_FLAGS = ("-std=gnu99", "-Wall", "-Wextra", "-Werror")
QEMU_MACHINE = "mps2-an385"

_PACKAGES = {
    "arm-none-eabi-gcc": "gcc-arm-none-eabi",
    "arm-none-eabi-nm": "binutils-arm-none-eabi",
    "arm-none-eabi-objdump": "binutils-arm-none-eabi",
    "arm-none-eabi-size": "binutils-arm-none-eabi",
    "qemu-system-arm": "qemu-system-arm",
    "gcc": "gcc",
}

# Soft-float helpers of the ARM EABI and of libgcc, and libm entry points.
_FLOAT_SYMBOL = re.compile(
    r"^(__aeabi_(f|d|[ul]?[il]2[fd]|ui2[fd]|ul2[fd])\w*"
    r"|__(add|sub|mul|div|neg)[sdtx]f3|__float\w*[sdtx]f|__fix\w*[sdtx]f\w*"
    r"|__(extend|trunc)\w*[sdtx]f2|__(eq|ne|lt|le|gt|ge|un|cmp)[sdtx]f2"
    r"|(sqrt|exp|log|pow|sin|cos|tan|floor|ceil|fabs|fmod|round)f?)$"
)
# Thumb-1 has no mnemonic starting with "v" or "f": those are VFP/FPA instructions.
_FLOAT_MNEMONIC = re.compile(r"[vf][a-z0-9.]*")


class ToolError(PocketnnError, RuntimeError):
    """A required tool is missing, or a build or run failed."""


def require_tool(name: str) -> str:
    """The full path of ``name``; raises :class:`ToolError` naming its Debian package."""
    path = shutil.which(name)
    if path is None:
        raise ToolError(
            f"{name} not found: install the Debian package {_PACKAGES.get(name, name)} "
            "(.ci/install-arm.sh installs every tool the C export needs)"
        )
    return path


def run_tool(args: Sequence[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run a tool, raising :class:`ToolError` with its output when it fails."""
    args = [require_tool(args[0]), *map(str, args[1:])]
    proc = subprocess.run(args, capture_output=True, timeout=timeout, **kwargs)
    if proc.returncode != 0:
        out = (proc.stdout or b"")[-2000:] + (proc.stderr or b"")[-4000:]
        raise ToolError(
            f"{Path(args[0]).name} failed (exit {proc.returncode}): {' '.join(args[1:])}\n"
            + out.decode(errors="replace")
        )
    return proc


def harness_defines(name: str, with_training: bool, with_state: bool = False) -> list[str]:
    """Compiler flags that point the harness programs at model ``name`` (``with_state``:
    its training keeps optimizer state, which the test drivers print too)."""
    flags = [
        f'-DPNN_HEADER="{name}.h"',
        f"-DPNN_PREFIX={name}",
        f"-DPNN_PREFIX_UPPER={name.upper()}",
    ]
    flags += ["-DPNN_WITH_TRAINING"] if with_training else []
    return flags + (["-DPNN_WITH_STATE"] if with_state else [])


def build_firmware(
    model_sources: Iterable[str | os.PathLike],
    harness_sources: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    include_dirs: Iterable[str | os.PathLike] = (),
    defines: Iterable[str] = (),
    optimize: str = "-Os",
    stack_info: bool = False,
) -> Path:
    """Cross-compile for ARMv6-M (Cortex-M0, soft float) and link a bare-metal ELF.

    ``model_sources`` are compiled with :data:`STRICT_FLAGS` (C99, pedantic, warnings are
    errors); ``harness_sources`` (start-up code, drivers) may use GNU C. With ``stack_info``
    GCC also writes ``.ci`` call-graph files with each function's stack frame.
    """
    # the compiler runs in the object folder: every path it is given must be absolute
    out = Path(out).resolve()
    objdir = out.with_suffix(".obj")
    objdir.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{Path(d).resolve()}" for d in (*include_dirs, HARNESS_DIR)]
    common = [
        *ARM_CPU_FLAGS,
        optimize,
        "-ffunction-sections",
        "-fdata-sections",
        *includes,
        *defines,
    ]
    if stack_info:
        common += ["-fstack-usage", "-fcallgraph-info=su"]
    objects = []
    for sources, flags in ((model_sources, STRICT_FLAGS), (harness_sources, HARNESS_FLAGS)):
        for src in (Path(source).resolve() for source in sources):
            obj = objdir / (src.stem + ".o")
            run_tool(["arm-none-eabi-gcc", *common, *flags, "-c", src, "-o", obj], cwd=objdir)
            objects.append(obj)
    run_tool(
        [
            "arm-none-eabi-gcc",
            *ARM_CPU_FLAGS,
            "-nostartfiles",
            "-T",
            HARNESS_DIR / "cortex_m.ld",
            "--specs=nano.specs",
            "--specs=nosys.specs",
            "-Wl,--gc-sections",
            *objects,
            "-o",
            out,
            "-lc",
            "-lgcc",
        ]
    )
    return out


def find_float_usage(elf: str | os.PathLike) -> list[str]:
    """Floating-point helper symbols and FPU instructions in an ARM ELF or object file.

    Returns one description per finding (empty when the code is integer-only): symbols
    such as ``__aeabi_fmul``, ``__aeabi_i2d``, ``__addsf3`` or ``sqrtf`` (defined or
    referenced), and any disassembled instruction whose mnemonic starts with ``v`` or ``f``
    (VFP/FPA; Thumb-1 has none).
    """
    found = []
    nm = run_tool(["arm-none-eabi-nm", "-A", elf]).stdout.decode()
    for line in nm.splitlines():
        symbol = line.split()[-1]
        if _FLOAT_SYMBOL.match(symbol):
            found.append(f"symbol {symbol}")
    dis = run_tool(["arm-none-eabi-objdump", "-d", elf]).stdout.decode()
    for line in dis.splitlines():
        fields = line.split("\t")  # "  addr:", "encoding ", "mnemonic", "operands"
        if (
            len(fields) >= 3
            and fields[0].strip().endswith(":")
            and _FLOAT_MNEMONIC.fullmatch(fields[2].strip())
        ):
            found.append(f"instruction {line.strip()}")
    return found


def section_sizes(elf: str | os.PathLike) -> dict[str, int]:
    """Bytes per allocated section (``arm-none-eabi-size -A``), e.g. ``{".text": 1234}``."""
    out = run_tool(["arm-none-eabi-size", "-A", elf]).stdout.decode()
    sizes: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def worst_stack(callgraph_files: Iterable[str | os.PathLike], root: str) -> int:
    """Worst-case stack depth from ``root``, from GCC's ``-fcallgraph-info=su`` output.

    Sums the static frames along the deepest call path. Functions GCC has no frame size
    for (libgcc's integer helpers) count as 0; the generated code has no recursion and no
    calls through pointers, so the result is exact for it.
    """
    frames: dict[str, int] = {}
    calls: dict[str, set[str]] = {}
    for path in callgraph_files:
        text = Path(path).read_text()
        nodes = re.findall(r'node: \{ title: "([^"]+)" label: "[^"]*?\\n(\d+) bytes', text)
        for title, size in nodes:
            frames[title] = max(frames.get(title, 0), int(size))
        for src, dst in re.findall(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', text):
            calls.setdefault(src, set()).add(dst)

    def depth(fn: str, seen: frozenset[str]) -> int:
        if fn in seen:
            raise ToolError(f"recursion through {fn}: no static stack bound")
        below = [depth(c, seen | {fn}) for c in calls.get(fn, ())]
        return frames.get(fn, 0) + max(below, default=0)

    return depth(root, frozenset())


def run_qemu(elf: str | os.PathLike, timeout: float = 120) -> str:
    """Run ``elf`` on QEMU's mps2-an385 (Cortex-M3) with semihosting; returns its output.

    Raises :class:`ToolError` when the program fails (semihosting exit with an error, a CPU
    fault) or runs longer than ``timeout`` seconds.
    """
    args = [
        "qemu-system-arm",
        "-M",
        QEMU_MACHINE,
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-semihosting-config",
        "enable=on,target=native",
        "-kernel",
        str(elf),
    ]
    try:
        proc = run_tool(args, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"qemu-system-arm: {elf} still running after {timeout} s") from exc
    return proc.stdout.decode() + proc.stderr.decode()


# --------------------------------------------------------------------------- footprint


@dataclass
class BuildFootprint:
    """Sizes in bytes of one linked Cortex-M0 firmware (``-Os``), from arm-none-eabi-size.

    ``model_*`` fields count the generated code alone (its object file); the others the
    whole firmware (plus start-up code and libgcc's integer division helpers).
    """

    label: str
    text: int
    rodata: int
    data: int
    bss: int
    stack: int
    model_text: int
    model_rodata: int
    model_data: int
    model_bss: int

    @property
    def flash(self) -> int:
        """text + rodata + data (initial values of .data are stored in flash)."""
        return self.text + self.rodata + self.data

    @property
    def ram(self) -> int:
        """data + bss + worst-case stack."""
        return self.data + self.bss + self.stack


@dataclass
class FootprintReport:
    """Footprints of a model's builds; ``str()`` gives a Markdown table."""

    model: str
    builds: list[BuildFootprint] = field(default_factory=list)

    def to_markdown(self) -> str:
        head = (
            "| model | build | flash (text + rodata + data) | RAM (data + bss + stack) "
            "| text | rodata | data | bss | stack |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"
        )
        rows = [
            f"| {self.model} | {b.label} | {b.flash:,} | {b.ram:,} | {b.text:,} | {b.rodata:,} "
            f"| {b.data:,} | {b.bss:,} | {b.stack:,} |"
            for b in self.builds
        ]
        verdicts = [
            f"- {fit_verdict(f'{self.model} {b.label}', b.flash, b.ram)}" for b in self.builds
        ]
        return "\n".join([head, *rows, "", *verdicts])

    __str__ = to_markdown


def _object_sizes(obj: Path) -> dict[str, int]:
    totals = dict.fromkeys((".text", ".rodata", ".data", ".bss"), 0)
    for section, size in section_sizes(obj).items():
        for kind in totals:
            if section == kind or section.startswith(kind + "."):
                totals[kind] += size
    return totals


def measure_build(
    model: Sequential | str | os.PathLike,
    workdir: Path,
    name: str,
    with_training: bool,
    feedback: Sequence[np.ndarray] | None = None,
    max_batch: int | None = None,
) -> BuildFootprint:
    """Generate, cross-compile and measure one build of ``model`` in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    header, source = export_c(model, workdir, name, with_training, feedback, max_batch)
    elf = build_firmware(
        [source],
        [HARNESS_DIR / "footprint_main.c", HARNESS_DIR / "runtime.c"],
        workdir / f"{name}.elf",
        [workdir],
        harness_defines(name, with_training),
        stack_info=True,
    )
    objdir = elf.with_suffix(".obj")
    sizes = section_sizes(elf)
    model_sizes = _object_sizes(objdir / f"{name}.o")
    stack = worst_stack(objdir.glob("*.ci"), "Reset_Handler")
    return BuildFootprint(
        "training" if with_training else "inference",
        sizes.get(".text", 0) + sizes.get(".ARM.exidx", 0),
        sizes.get(".rodata", 0),
        sizes.get(".data", 0),
        sizes.get(".bss", 0),
        stack,
        model_sizes[".text"],
        model_sizes[".rodata"],
        model_sizes[".data"],
        model_sizes[".bss"],
    )


def footprint_report(
    model: Sequential | str | os.PathLike,
    name: str = "model",
    with_training: bool = True,
    feedback: Sequence[np.ndarray] | None = None,
    max_batch: int | None = None,
    label: str | None = None,
) -> FootprintReport:
    """Measure flash and RAM of a model's Cortex-M0 firmware, inference-only and training.

    Parameters
    ----------
    model : a model or the path of a model file
    name : the C prefix (as in :func:`~pocketnn.export.export_c`)
    with_training : also measure the training build (needs feedback, as export_c does)
    feedback, max_batch : passed to :func:`~pocketnn.export.export_c`
    label : how the model is named in the table (default: its dims, e.g. 784-100-50-10)

    Returns
    -------
    A :class:`FootprintReport`; ``str(report)`` is a Markdown table.
    """
    if label is None:
        label = (
            "-".join(map(str, model.dims)) if isinstance(model, Sequential) else (Path(model).name)
        )
    report = FootprintReport(label)
    with tempfile.TemporaryDirectory(prefix="pocketnn-footprint-") as tmp:
        for training in (False, True) if with_training else (False,):
            workdir = Path(tmp) / ("train" if training else "infer")
            report.builds.append(measure_build(model, workdir, name, training, feedback, max_batch))
    return report
