"""The ``pocketnn`` command: train, evaluate, predict, info (and export-c).

Every failure the user can cause (a bad argument, a missing or corrupt file, an impossible
hyperparameter, an overflow) ends in one line ``pocketnn: error: ...`` and exit status 2.
Percentages and seconds are printed for people; everything computed stays integer.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .datasets import DatasetError, load_dataset, read_idx
from .fileio import atomic_write_bytes
from .intmath import DEFAULT_ENGINE, ENGINES, OVERFLOW_POLICIES, configure
from .model import ModelFileError, Sequential, build_mlp, load_checkpoint, save
from .train import ALGORITHMS, ROUNDINGS, EpochResult, Trainer, he_init

PAPER_ARCHS = {"mnist": "784-100-50-10", "fashion-mnist": "784-200-100-50-10"}
PRESETS: dict[str, dict[str, dict]] = {
    # The paper's setting: pocket tanh everywhere, DFA, batch 20, lr_inv 1000 doubling every 10.
    # Epoch counts are the reference runs' lengths (pocketnn-algorithm.md: MNIST 50, Fashion 25).
    "paper": {
        "mnist": {"epochs": 50},
        "fashion-mnist": {"epochs": 25},
    },
    # The paper's networks and schedule with unbiased (stochastic) rounding of the weight
    # update; see the README's reproduction section for how it was chosen and what it gives.
    "best": {
        "mnist": {"epochs": 30, "rounding": "stochastic"},
        "fashion-mnist": {"epochs": 25, "rounding": "stochastic"},
    },
}
PAPER_DEFAULTS = {
    "activation": "pocket_tanh",
    "output_activation": None,
    "algorithm": "dfa",
    "batch_size": 20,
    "lr_inv": 1000,
    "lr_double_every": 10,
    "rounding": "trunc",
    "seed": 0,
}


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise CLIError(f"{message} (see '{self.prog} --help')")


def _settings(args: argparse.Namespace) -> dict:
    """Resolve preset then explicit flags into one dict of hyperparameters."""
    dataset = args.dataset
    preset = PRESETS[args.preset or "paper"][dataset]
    merged = dict(PAPER_DEFAULTS, arch=PAPER_ARCHS[dataset], **preset)
    for key in list(merged):
        value = getattr(args, key, None)
        if value is not None:
            merged[key] = value
    return merged


def _parse_arch(text: str) -> list[int]:
    try:
        dims = [int(part) for part in text.split("-")]
    except ValueError:
        raise CLIError(f"--arch must look like 784-100-50-10, got {text!r}") from None
    if len(dims) < 2 or min(dims) < 1:
        raise CLIError(f"--arch needs at least two positive widths, got {text!r}")
    return dims


def _percent(correct: int, total: int) -> str:
    return f"{100 * correct / total:.2f} %"


class _ProgressBar:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label, self.enabled, self.last = label, enabled and sys.stderr.isatty(), -1
        self.start = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        filled = 30 * done // total
        if filled == self.last and done != total:
            return
        self.last = filled
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] "
            f"{done}/{total} steps {rate:.0f}/s"
        )
        if done == total:
            sys.stderr.write("\r" + " " * 79 + "\r")
        sys.stderr.flush()


def _epoch_line(r: EpochResult, epochs: int) -> str:
    test = _percent(r.test_correct, r.test_total) if r.test_total else "-"
    return (
        f"epoch {r.epoch:3d}/{epochs}  lr_inv {r.lr_inv:6d}  loss {r.loss:10d}  "
        f"train {_percent(r.train_correct, r.train_total)}  test {test}  {r.seconds:6.2f} s"
    )


def _append_log(path: Path, record: dict, fresh: bool = False) -> None:
    """Append one JSON line (or start the log over when ``fresh``), rewriting atomically so
    a crash never leaves half a line."""
    old = path.read_bytes() if path.exists() and not fresh else b""
    atomic_write_bytes(path, old + (json.dumps(record) + "\n").encode())


def log_path_for(model_path: Path) -> Path:
    """The JSON-lines training log kept next to a model file."""
    return model_path.with_name(model_path.stem + ".log.jsonl")


RESUME_FIXED = (
    "preset",
    "algorithm",
    "batch_size",
    "lr_inv",
    "lr_double_every",
    "seed",
    "rounding",
)


def _resume(args: argparse.Namespace, out: Path) -> tuple[Trainer, int, str]:
    """The trainer saved in ``out``, refusing flags that would change the run."""
    if not out.exists():
        raise CLIError(f"--resume: {out} does not exist yet; start without --resume")
    model, state, arrays = load_checkpoint(out)
    if not state:
        raise CLIError(f"--resume: {out} holds no training state")
    if state.get("dataset") != args.dataset:
        raise CLIError(f"--resume: {out} was trained on {state.get('dataset')}, not {args.dataset}")
    changed = [
        f"--{key.replace('_', '-')} {getattr(args, key)} (saved: {state.get(key)})"
        for key in RESUME_FIXED
        if getattr(args, key) is not None and getattr(args, key) != state.get(key)
    ]
    if args.arch is not None and _parse_arch(args.arch) != model.dims:
        changed.append(f"--arch {args.arch} (saved: {'-'.join(map(str, model.dims))})")
    for flag, given, saved in (
        ("--activation", args.activation, model.layers[0].activation_name),
        ("--output-activation", args.output_activation, model.layers[-1].activation_name),
    ):
        if given is not None and given != saved:
            changed.append(f"{flag} {given} (saved: {saved})")
    if changed:
        raise CLIError(f"--resume continues the saved run; it cannot change {', '.join(changed)}")
    try:
        trainer = Trainer.from_state(model, state, arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise CLIError(f"--resume: {out} has an inconsistent training state ({exc})") from None
    print(f"resuming {out} after epoch {trainer.epoch}", file=sys.stderr)
    epochs = args.epochs if args.epochs is not None else state["epochs"]
    return trainer, epochs, state.get("preset", "paper")


def _fresh(args: argparse.Namespace, n_inputs: int, n_classes: int) -> tuple[Trainer, int, str]:
    """A new model and trainer from the preset and the flags."""
    cfg = _settings(args)
    model = build_mlp(_parse_arch(cfg["arch"]), cfg["activation"], cfg["output_activation"])
    if model.dims[0] != n_inputs or model.dims[-1] != n_classes:
        raise CLIError(
            f"--arch {cfg['arch']} must start at {n_inputs} and end at {n_classes} "
            f"for {args.dataset}"
        )
    trainer = Trainer(
        model,
        cfg["algorithm"],
        cfg["lr_inv"],
        cfg["batch_size"],
        cfg["lr_double_every"],
        seed=cfg["seed"],
        rounding=cfg["rounding"],
    )
    if cfg["algorithm"] == "bp":
        he_init(model, cfg["seed"])
    return trainer, cfg["epochs"], args.preset or "paper"


def cmd_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not out.parent.exists():
        raise CLIError(f"--out: folder {out.parent} does not exist")
    if out.is_dir():
        raise CLIError(f"--out: {out} is a folder; name the model file to write")
    if out.exists() and not (args.resume or args.force):
        raise CLIError(
            f"--out: {out} exists; --resume continues it, --force replaces it with a new run"
        )
    if args.arch is not None:
        _parse_arch(args.arch)  # fail before the dataset is loaded
    log_path = log_path_for(out)
    data = load_dataset(args.dataset, data_dir=args.data_dir, verbose=not args.quiet)
    if args.resume:
        trainer, epochs, preset = _resume(args, out)
    else:
        trainer, epochs, preset = _fresh(args, data.train_images.shape[1], len(data.classes))
    model = trainer.model
    if not args.quiet:
        print(
            f"{args.dataset}: {model!r}, {model.n_params} parameters, algorithm "
            f"{trainer.algorithm}, batch {trainer.batch_size}, lr_inv {trainer.lr_inv}, "
            f"rounding {trainer.rounding}, seed {trainer.seed}, engine {args.engine}"
        )

    def save_checkpoint() -> None:
        state, arrays = trainer.state()
        state.update(dataset=args.dataset, epochs=epochs, preset=preset)
        save(out, model, training=state, extra_arrays=arrays)

    def on_epoch(result: EpochResult) -> None:
        save_checkpoint()
        # a fresh run's first epoch starts the log over (an old run's log lives until then)
        fresh = not args.resume and result.epoch == 1
        _append_log(
            log_path, dict(vars(result), dataset=args.dataset, seed=trainer.seed), fresh=fresh
        )
        if not args.quiet:
            print(_epoch_line(result, epochs), flush=True)

    bar = _ProgressBar("training", not args.quiet)
    done_before = trainer.epoch
    trainer.fit(
        data.train_images,
        data.train_labels,
        epochs,
        data.test_images,
        data.test_labels,
        on_epoch=on_epoch,
        progress=bar,
    )
    if trainer.epoch == done_before:  # no epoch to run: still write the model asked for
        save_checkpoint()
    last = trainer.history[-1] if trainer.history else None
    if last is not None and last.test_correct is not None:
        correct = last.test_correct  # the model is the one saved after that epoch
    else:
        correct = model.count_correct(data.test_images, data.test_labels)
    best = max(trainer.history, key=lambda r: r.test_correct or 0, default=None)
    print(
        f"test accuracy: {_percent(correct, len(data.test_labels))} "
        f"({correct}/{len(data.test_labels)}) after {trainer.epoch} epochs",
        end="",
    )
    if best is not None and best.test_correct:
        print(f"; best {_percent(best.test_correct, best.test_total)} at epoch {best.epoch}")
    else:
        print()
    print(f"model saved to {out}, log in {log_path}")
    return 0


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]`` as an int64 (n_classes, n_classes) matrix."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return cm


def cmd_evaluate(args: argparse.Namespace) -> int:
    model, _, _ = load_checkpoint(args.model)
    data = load_dataset(args.dataset, data_dir=args.data_dir)
    pred = model.predict(data.test_images)
    cm = confusion_matrix(data.test_labels, pred, model.dims[-1])
    correct = int(np.trace(cm))
    print(f"{args.dataset} test accuracy: {_percent(correct, len(pred))} ({correct}/{len(pred)})")
    print("confusion matrix (rows: true class, columns: predicted)")
    width = max(5, len(str(cm.max())) + 1)
    print(" " * 12 + "".join(f"{j:>{width}d}" for j in range(cm.shape[1])))
    for i, row in enumerate(cm):
        name = data.classes[i][:10] if i < len(data.classes) else str(i)
        print(f"{name:>10s}  " + "".join(f"{v:>{width}d}" for v in row))
    return 0


_PGM_GAP = rb"(?:\s|#[^\n]*\n)+"  # white space and comment lines between header fields
_PGM_HEADER = re.compile(rb"(P[25])" + (_PGM_GAP + rb"(\d+)") * 3 + rb"\s")


def _read_pgm(raw: bytes, path: Path) -> np.ndarray:
    """A binary (P5) or plain (P2) 8-bit PGM, scaled to 0..255 when its maxval is lower."""
    header = _PGM_HEADER.match(raw)
    if header is None:
        raise CLIError(f"{path}: not a valid PGM header")
    w, h, maxval = (int(field) for field in header.groups()[1:])
    if not 1 <= maxval <= 255:
        raise CLIError(f"{path}: PGM maxval {maxval}: only 8-bit images (1..255) are supported")
    body = raw[header.end() :]
    if header.group(1) == b"P5":
        pixels = np.frombuffer(body[: w * h], dtype=np.uint8).astype(np.int64)
    else:
        try:
            pixels = np.array([int(token) for token in body.split()], dtype=np.int64)
        except ValueError:
            raise CLIError(f"{path}: a plain PGM pixel is not an integer") from None
    if pixels.size != w * h:
        raise CLIError(f"{path}: {pixels.size} pixels where the header announces {w * h}")
    if pixels.size and (pixels.min() < 0 or pixels.max() > maxval):
        raise CLIError(f"{path}: pixel values must lie in 0..{maxval}")
    return (pixels * 255 // maxval).reshape(1, h, w)


def read_images(path: Path) -> np.ndarray:
    """Read 28x28 grayscale images as (N, 784) uint8 from a PGM, PNG or idx file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CLIError(f"{path}: {exc.strerror}") from None
    if raw[:2] in (b"P5", b"P2"):
        images = _read_pgm(raw, path)
    elif raw[:8] == b"\x89PNG\r\n\x1a\n":
        try:
            from PIL import Image
        except ImportError:
            raise CLIError("reading PNG needs Pillow: pip install 'pocketnn[images]'") from None
        with Image.open(path) as im:
            images = np.asarray(im.convert("L"), dtype=np.uint8)[None]
    else:
        images = read_idx(path)
        if images.ndim == 2:
            images = images[None]
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise CLIError(f"{path}: expected 28x28 images, found an array of shape {images.shape}")
    if images.size and (int(images.min()) < 0 or int(images.max()) > 255):
        raise CLIError(f"{path}: pixel values must lie in 0..255")
    return images.reshape(images.shape[0], -1).astype(np.uint8)


def cmd_predict(args: argparse.Namespace) -> int:
    model, state, _ = load_checkpoint(args.model)
    classes = None
    if state and state.get("dataset") in PAPER_ARCHS:
        from .datasets import CLASSES

        classes = CLASSES[state["dataset"]]
    for name in args.files:
        images = read_images(Path(name))
        if args.invert:
            images = 255 - images
        for i, cls in enumerate(model.predict(images)):
            label = f" ({classes[cls]})" if classes else ""
            where = f"{name}[{i}]" if images.shape[0] > 1 else name
            print(f"{where}: {cls}{label}")
    return 0


def describe(model: Sequential, state: dict | None) -> str:
    """A human-readable summary of a model: layers, parameters, value ranges."""
    lines = [f"architecture: {'-'.join(map(str, model.dims))}", f"parameters: {model.n_params}"]
    for layer in model.layers:
        lines.append(
            f"  {layer.name}: {layer.n_in} -> {layer.n_out}, {layer.activation_name}, "
            f"W {layer.W.dtype} [{layer.W.min()}, {layer.W.max()}], "
            f"b [{layer.b.min()}, {layer.b.max()}], "
            f"{layer.W.size + layer.b.size} params, clamp ±{layer.weight_clamp}"
        )
    if state:
        lines.append(
            f"training: {state.get('algorithm')} on {state.get('dataset')}, "
            f"{state.get('epoch')} epochs done, seed {state.get('seed')}, "
            f"batch {state.get('batch_size')}, lr_inv {state.get('lr_inv')}"
        )
        last = (state.get("history") or [None])[-1]
        if last and last.get("test_total"):
            lines.append(
                f"last test accuracy: {_percent(last['test_correct'], last['test_total'])}"
            )
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    model, state, _ = load_checkpoint(args.model)
    print(describe(model, state))
    return 0


def cmd_export_c(args: argparse.Namespace) -> int:
    from . import export

    paths = export.export_c(args.model, args.out, name=args.name, with_training=args.with_training)
    for p in paths:
        print(f"wrote {p}")
    if args.report:
        print(export.footprint_report(args.model, name=args.name, with_training=args.with_training))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pocketnn", description="Integer-only neural networks (PocketNN).")
    p.add_argument("--version", action="version", version=f"pocketnn {__version__}")
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=DEFAULT_ENGINE,
        help=f"exact integer engine; all give the same bits (default here: {DEFAULT_ENGINE})",
    )
    p.add_argument(
        "--overflow",
        choices=OVERFLOW_POLICIES,
        default="raise",
        help="what an int32 overflow does: raise (default) or wrap like the reference",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a network on MNIST or Fashion-MNIST")
    t.add_argument("--dataset", required=True, choices=sorted(PAPER_ARCHS))
    t.add_argument("--preset", choices=sorted(PRESETS), help="hyperparameters (default paper)")
    t.add_argument("--arch", help="layer widths, e.g. 784-100-50-10")
    t.add_argument("--activation", help="hidden activation (default pocket_tanh)")
    t.add_argument("--output-activation", help="output activation (default: as hidden)")
    t.add_argument("--algorithm", choices=ALGORITHMS)
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr-inv", type=int)
    t.add_argument("--lr-double-every", type=int, help="double lr_inv every N epochs (0: never)")
    t.add_argument(
        "--rounding",
        choices=ROUNDINGS,
        help="weight-update rounding: trunc (reference) or stochastic (unbiased)",
    )
    t.add_argument("--seed", type=int)
    t.add_argument("--data-dir", help="folder holding the four idx files (raw or .gz)")
    t.add_argument("--out", required=True, help="model file, saved after every epoch")
    t.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    t.add_argument("--force", action="store_true", help="replace an existing --out file")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="test accuracy and confusion matrix")
    e.add_argument("model")
    e.add_argument("--dataset", required=True, choices=sorted(PAPER_ARCHS))
    e.add_argument("--data-dir")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="classify 28x28 images (PNG, PGM or idx)")
    pr.add_argument("model")
    pr.add_argument("files", nargs="+")
    pr.add_argument("--invert", action="store_true", help="dark digits on light ground")
    pr.set_defaults(func=cmd_predict)

    i = sub.add_parser("info", help="architecture, parameter counts, value ranges")
    i.add_argument("model")
    i.set_defaults(func=cmd_info)

    x = sub.add_parser("export-c", help="generate C99 for a microcontroller without an FPU")
    x.add_argument("model")
    x.add_argument("--out", required=True, help="output folder")
    x.add_argument("--name", default="model", help="C identifier prefix")
    x.add_argument("--with-training", action="store_true", help="include the DFA training step")
    x.add_argument("--report", action="store_true", help="print the Cortex-M0 footprint")
    x.set_defaults(func=cmd_export_c)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        with configure(engine=args.engine, overflow=args.overflow):
            return args.func(args)
    except (
        CLIError,
        ImportError,
        DatasetError,
        ModelFileError,
        OverflowError,  # IntegerOverflowError names the layer and the operation
        MemoryError,
        RuntimeError,  # e.g. a missing cross-compiler for export-c --report
        subprocess.SubprocessError,
        ValueError,
        TypeError,
        OSError,
    ) as exc:
        print(f"pocketnn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "pocketnn: interrupted; the last finished epoch is saved (use --resume)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
