"""The sweep's tables, for people: accuracy mean ± sd (min–max) over seeds, per setting.

Records hold integer counts; percentages and their spread are computed here, at the edge.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from .spec import Run


def percent(record: dict, split: str) -> float | None:
    total = record.get(f"{split}_total")
    correct = record.get(f"{split}_correct")
    return None if not total or correct is None else 100 * correct / total


def cell(values: Sequence[float]) -> str:
    """``mean ± sd (min–max)``, the sd over seeds (none for a single value)."""
    if not values:
        return "-"
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.2f}{spread} ({min(values):.2f}–{max(values):.2f})"


def best_val_epoch(epochs: list[dict]) -> dict | None:
    """The epoch with the highest validation accuracy (the first on ties), if validated."""
    validated = [r for r in epochs if r.get("val_total")]
    return max(validated, key=lambda r: r["val_correct"]) if validated else None


def setting_table(label: str, records: list[dict], report_epochs: Sequence[int]) -> str:
    """One setting: the test (and validation) accuracy at the chosen epochs, the best epoch
    and, when validated, the test accuracy at the best validation epoch."""
    seeds = [r["seed"] for r in records]
    n = min(len(r["epochs"]) for r in records)
    validated = any(e.get("val_total") for r in records for e in r["epochs"])
    head = "| epochs | test accuracy %, mean ± sd (min–max) |"
    rule = "|---:|---|"
    if validated:
        head += " validation accuracy % |"
        rule += "---|"
    rows = [f"### {label}: seeds {seeds}", "", head, rule]
    stopped = [r["name"] for r in records if r.get("stopped_early")]
    for e in sorted(set(report_epochs or [n])):
        if e > n:
            continue
        row = f"| {e} | {cell([percent(r['epochs'][e - 1], 'test') for r in records])} |"
        if validated:
            row += f" {cell([percent(r['epochs'][e - 1], 'val') for r in records])} |"
        rows.append(row)
    best = [max(r["epochs"][:n], key=lambda x: x["test_correct"]) for r in records]
    row = (
        f"| best of 1–{n} (chosen on test) | {cell([percent(b, 'test') for b in best])}, "
        f"at epochs {[b['epoch'] for b in best]} |"
    )
    rows.append(row + (" |" if validated else ""))
    if validated:
        chosen = [best_val_epoch(r["epochs"]) for r in records]
        rows.append(
            f"| at the best validation epoch | {cell([percent(c, 'test') for c in chosen])}, "
            f"at epochs {[c['epoch'] for c in chosen]} | "
            f"{cell([percent(c, 'val') for c in chosen])} |"
        )
    seconds = sum(r["seconds"] for r in records) / sum(len(r["epochs"]) for r in records)
    rows.append(f"\nmean training time per epoch: {seconds:.2f} s")
    if stopped:
        rows.append(f"stopped early (ASHA, on validation accuracy): {', '.join(stopped)}")
    return "\n".join(rows)


def run_seconds(records: list[dict]) -> str:
    """The wall time of a run's epochs, min–max over its seeds, in whole seconds."""
    seconds = sorted(round(r["seconds"]) for r in records)
    return f"{seconds[0]:,}" if seconds[0] == seconds[-1] else f"{seconds[0]:,}–{seconds[-1]:,}"


def summary_table(groups: dict[str, list[dict]]) -> str:
    """One row per setting: the test accuracy after the last epoch, on validation, and the
    wall time per run."""
    validated = any(e.get("val_total") for rs in groups.values() for r in rs for e in r["epochs"])
    head = "| setting | seeds | epochs | test % after the last epoch |"
    rule = "|---|---:|---:|---|"
    if validated:
        head += " test % at the best validation epoch | best validation % |"
        rule += "---|---|"
    rows = [head + " time per run, s |", rule + "---:|"]
    for label, records in groups.items():
        last = [r["epochs"][-1] for r in records]
        epochs = sorted({len(r["epochs"]) for r in records})
        span = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}–{epochs[-1]}"
        row = f"| {label} | {len(records)} | {span} | {cell([percent(e, 'test') for e in last])} |"
        if validated:
            chosen = [best_val_epoch(r["epochs"]) for r in records]
            if all(chosen):
                row += f" {cell([percent(c, 'test') for c in chosen])} |"
                row += f" {cell([percent(c, 'val') for c in chosen])} |"
            else:
                row += " - | - |"
        rows.append(f"{row} {run_seconds(records)} |")
    return "\n".join(rows)


def report(runs: Sequence[Run], records: dict[str, dict], report_epochs: Sequence[int]) -> str:
    """The summary over settings, then one table per setting, for the runs recorded."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        if run.name in records:
            groups.setdefault(run.label, []).append(records[run.name])
    if not groups:
        return "no finished run yet"
    parts = [summary_table(groups)]
    parts += [setting_table(label, rs, report_epochs) for label, rs in groups.items()]
    return "\n\n".join(parts) + "\n"
