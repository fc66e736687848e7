"""The microcontroller class a footprint is checked against, and the verdict, with numbers.

Sizes are integers; kilobytes (1024 bytes) are printed with one decimal, rounded up, so a
model that does not fit never reads as if it just did.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chip:
    """A target's memory: flash for code and constants, RAM for data, buffers and stack."""

    name: str
    flash: int  # bytes
    ram: int  # bytes


RP2040 = Chip("RP2040 (Raspberry Pi Pico)", 2 * 1024 * 1024, 264 * 1024)
"""The Pico-class reference: Cortex-M0+, no FPU, 2 MB of flash, 264 KB of SRAM."""


def kilobytes(n_bytes: int) -> str:
    """``n_bytes`` in KB (1024 bytes), one decimal rounded up, without a trailing ``.0``."""
    tenths = -(-int(n_bytes) * 10 // 1024)
    whole, tenth = divmod(tenths, 10)
    return f"{whole:,}" if tenth == 0 else f"{whole:,}.{tenth}"


def fit_verdict(label: str, flash: int, ram: int, chip: Chip = RP2040) -> str:
    """One line: whether ``flash`` and ``ram`` bytes fit ``chip``, with the numbers."""
    over = [
        f"{kilobytes(need)} KB {what} > {kilobytes(have)} KB"
        for what, need, have in (("flash", flash, chip.flash), ("RAM", ram, chip.ram))
        if need > have
    ]
    if over:
        return f"{label}: does not fit {chip.name}: needs {' and '.join(over)}"
    return (
        f"{label}: fits {chip.name}: flash {kilobytes(flash)} of {kilobytes(chip.flash)} KB, "
        f"RAM {kilobytes(ram)} of {kilobytes(chip.ram)} KB"
    )
