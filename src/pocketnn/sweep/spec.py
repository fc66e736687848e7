"""A sweep spec: a small TOML file naming the runs of a sweep.

::

    [sweep]
    seeds = [1, 2, 3]          # every setting runs once per seed
    search = "grid"            # or "random", with samples = N settings drawn from [random]
                               # by the draws' own seed = N (default 0)
    out = "runs/lr"            # the sweep's folder (the command's --out overrides it)

    [train]                    # pocketnn train flags every run shares (dashes or underscores)
    data = "digits.npz"        # a path relative to the spec file
    epochs = 20
    val = 200

    [grid]                     # every combination of these values is a setting
    lr_inv = [500, 1000, 2000]
    rounding = ["trunc", "stochastic"]

    [random]                   # instead of [grid] with search = "random": each setting
                               # draws every key
    lr_inv = {low = 200, high = 4000}   # an integer, uniform in [low, high]
    batch_size = [10, 20, 50]            # one of the values

    [early_stopping]           # Ray Tune's ASHA on the validation accuracy (needs --ray, val)
    grace = 3                  # epochs every run gets
    reduction = 3              # keep about 1/reduction of the runs at each rung

    [report]
    epochs = [1, 5, 10, 20]    # table rows (default: the last epoch)

Everything here is integers and names; the spec is refused with one line naming the file
and the key for anything unknown or out of place.
"""

from __future__ import annotations

import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency on 3.10 only)
    import tomli as tomllib

SECTIONS = {"sweep", "train", "grid", "random", "early_stopping", "report"}
SWEEP_KEYS = {"seeds", "search", "samples", "seed", "out"}
NOT_SWEPT = {"out", "resume", "force", "quiet", "seed", "help"}
"""train flags a spec cannot set: the sweep owns the files, the output and the seeds."""
GLOBAL_FLAGS = {"engine", "overflow"}
"""Options of the pocketnn command itself (before ``train``)."""


class SpecError(ValueError):
    """A sweep spec that cannot run as written."""


@dataclass(frozen=True)
class Run:
    """One training run: a setting (flag -> value) and a seed, with a file-safe name."""

    name: str
    label: str
    setting: dict[str, Any]
    seed: int

    def argv(self, out: Path, resume: bool = False) -> list[str]:
        """The ``pocketnn`` command line of this run, writing its model to ``out``: a new run
        (``--force``), or with ``resume`` the continuation of the checkpoint in ``out``."""
        front, back = [], []
        for key, value in self.setting.items():
            flag = f"--{key.replace('_', '-')}"
            target = front if key in GLOBAL_FLAGS else back
            target += [flag, str(value)]
        return [
            *front,
            "train",
            *back,
            "--seed",
            str(self.seed),
            "--out",
            str(out),
            "--resume" if resume else "--force",
        ]


@dataclass
class Spec:
    """A parsed sweep spec."""

    path: Path
    runs: list[Run]
    seeds: list[int]
    out: Path | None
    early_stopping: dict[str, int] | None
    report_epochs: list[int] = field(default_factory=list)


def _fail(path: Path, message: str) -> SpecError:
    return SpecError(f"{path}: {message}")


def _key(path: Path, section: str, key: str) -> str:
    name = key.replace("-", "_")
    if name in NOT_SWEPT:
        raise _fail(path, f"[{section}] {key}: the sweep sets this flag itself")
    return name


def _value(path: Path, section: str, key: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _fail(path, f"[{section}] {key}: an integer or a string expected, got {value!r}")
    return value


def _check_runs(path: Path, runs: list[Run]) -> None:
    """Parse each setting's command line with pocketnn's own parser: unknown flags, bad
    types and choices are refused before anything runs."""
    from ..cli.errors import CLIError
    from ..cli.parser import build_parser

    checked = set()
    for run in runs:
        if run.label in checked:
            continue
        checked.add(run.label)
        try:
            build_parser().parse_args(run.argv(Path("check.npz")))
        except CLIError as exc:
            raise _fail(path, f"setting {run.label}: {exc}") from None


def _ints(path: Path, where: str, value: Any, positive: bool = False) -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or any(isinstance(v, bool) or not isinstance(v, int) or (positive and v < 1) for v in value)
    ):
        kind = "positive integers" if positive else "integers"
        raise _fail(path, f"{where}: a non-empty list of {kind} expected, got {value!r}")
    return value


def _label(setting: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k}={setting[k]}" for k in keys) or "base"


def _file_name(label: str, seed: int) -> str:
    text = label.replace(", ", "+") + f"+seed={seed}"
    return re.sub(r"[^A-Za-z0-9=+._-]", "_", text)


def load_spec(path: str | Path) -> Spec:
    """Read and check a sweep spec; the runs it names, in order."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path}: no such sweep spec") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc})") from None
    if unknown := sorted(set(doc) - SECTIONS):
        raise _fail(path, f"unknown section(s) {unknown}; known: {', '.join(sorted(SECTIONS))}")
    for name, section in doc.items():
        if not isinstance(section, dict):
            raise _fail(path, f"{name} must be a [{name}] table")
    sweep = doc.get("sweep", {})
    if unknown := sorted(set(sweep) - SWEEP_KEYS):
        raise _fail(path, f"[sweep] unknown key(s) {unknown}; known: {', '.join(SWEEP_KEYS)}")
    seeds = _ints(path, "[sweep] seeds", sweep.get("seeds", [0]))
    if len(set(seeds)) != len(seeds):
        raise _fail(path, f"[sweep] seeds: repeated seed in {seeds}")
    base = {}
    for key, value in doc.get("train", {}).items():
        base[_key(path, "train", key)] = _value(path, "train", key, value)
    settings = _settings(path, doc, sweep)
    varying = list(dict.fromkeys(k for s in settings for k in s))
    if len({tuple(sorted(s.items())) for s in settings}) != len(settings):
        raise _fail(path, "two settings are the same; every grid value must differ")
    runs = []
    for setting in settings:
        merged = dict(base, **setting)
        if "data" in merged:
            merged["data"] = str((path.parent / merged["data"]).resolve())
        if "data" not in merged and "dataset" not in merged:
            raise _fail(path, "no data: set dataset or data in [train] or [grid]")
        label = _label(setting, varying)
        runs += [Run(_file_name(label, s), label, merged, s) for s in seeds]
    _check_runs(path, runs)
    out = sweep.get("out")
    if out is not None and not isinstance(out, str):
        raise _fail(path, f"[sweep] out: a folder name expected, got {out!r}")
    return Spec(
        path,
        runs,
        seeds,
        Path(out) if out else None,
        _early_stopping(path, doc.get("early_stopping"), runs),
        _ints(path, "[report] epochs", doc["report"]["epochs"], positive=True)
        if "epochs" in doc.get("report", {})
        else [],
    )


def _settings(path: Path, doc: dict, sweep: dict) -> list[dict]:
    """The settings the search visits, each a dict of the keys it varies."""
    search = sweep.get("search", "grid")
    if search == "grid":
        if "random" in doc:
            raise _fail(path, '[random] needs search = "random" in [sweep]')
        axes = {}
        for key, values in doc.get("grid", {}).items():
            name = _key(path, "grid", key)
            if not isinstance(values, list) or not values:
                raise _fail(path, f"[grid] {key}: a non-empty list of values expected")
            axes[name] = [_value(path, "grid", key, v) for v in values]
        return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    if search != "random":
        raise _fail(path, f'[sweep] search: "grid" or "random", got {search!r}')
    if "grid" in doc:
        raise _fail(path, '[grid] is for search = "grid"; random search draws from [random]')
    samples, seed = sweep.get("samples"), sweep.get("seed", 0)
    _ints(path, "[sweep] samples", [samples], positive=True)
    _ints(path, "[sweep] seed", [seed])
    rng = np.random.default_rng([seed])
    draws = []
    for _ in range(samples):
        setting = {}
        for key, rule in doc.get("random", {}).items():
            name = _key(path, "random", key)
            if isinstance(rule, list) and rule:
                value = rule[int(rng.integers(len(rule)))]
            elif isinstance(rule, dict) and set(rule) == {"low", "high"}:
                low, high = _ints(path, f"[random] {key}", [rule["low"], rule["high"]])
                if low > high:
                    raise _fail(path, f"[random] {key}: low {low} is above high {high}")
                value = int(rng.integers(low, high + 1))
            else:
                raise _fail(path, f"[random] {key}: a list or {{low = A, high = B}} expected")
            setting[name] = _value(path, "random", key, value)
        if setting not in draws:  # the same draw twice would be the same runs
            draws.append(setting)
    return draws


def _early_stopping(path: Path, section: dict | None, runs: list[Run]) -> dict[str, int] | None:
    if section is None:
        return None
    rules = {"grace": 1, "reduction": 3}
    if unknown := sorted(set(section) - set(rules)):
        raise _fail(path, f"[early_stopping] unknown key(s) {unknown}; known: grace, reduction")
    for key in rules:
        if key in section:
            rules[key] = _ints(path, f"[early_stopping] {key}", [section[key]], positive=True)[0]
    if rules["reduction"] < 2:
        raise _fail(path, "[early_stopping] reduction must be 2 or more")
    if not all(run.setting.get("val") for run in runs):
        raise _fail(
            path,
            "[early_stopping] decides on validation accuracy, never on the test set: "
            "set val = N (samples held out of the training set) for every run",
        )
    return rules
