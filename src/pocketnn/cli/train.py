"""The ``train`` command: a fresh run from the preset and flags, or ``--resume`` of a saved one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..datasets import load_dataset
from ..io.atomic import atomic_write_bytes
from ..io.model_file import load_checkpoint, to_bytes
from ..nn.model import build_mlp
from ..train.seeding import he_init
from ..train.trainer import EpochResult, Trainer
from .errors import CLIError, about
from .presets import parse_arch, settings
from .progress import ProgressBar, epoch_line
from .report import percent
from .run_files import check_room, own_run_files
from .runlog import is_prefix, log_path_for, read_log, write_log
from .validate import check_batch_size

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
    if args.arch is not None and parse_arch(args.arch) != model.dims:
        changed.append(f"--arch {args.arch} (saved: {'-'.join(map(str, model.dims))})")
    for flag, given, saved in (
        ("--activation", args.activation, model.layers[0].activation_name),
        ("--output-activation", args.output_activation, model.layers[-1].activation_name),
    ):
        if given is not None and given != saved:
            changed.append(f"{flag} {given} (saved: {saved})")
    if changed:
        raise CLIError(
            f"--resume: {out} continues the saved run; it cannot change {', '.join(changed)}"
        )
    try:
        trainer = Trainer.from_state(model, state, arrays)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise CLIError(f"--resume: {out} has an inconsistent training state ({exc})") from None
    epochs = args.epochs if args.epochs is not None else state.get("epochs")
    if type(epochs) is not int or epochs < 0:
        raise CLIError(f"--resume: {out} records no epoch count ({epochs!r}); give --epochs")
    print(f"resuming {out} after epoch {trainer.epoch}", file=sys.stderr)
    return trainer, epochs, state.get("preset", "paper")


def _fresh(args: argparse.Namespace, n_inputs: int, n_classes: int) -> tuple[Trainer, int, str]:
    """A new model and trainer from the preset and the flags."""
    cfg = settings(args)
    model = build_mlp(parse_arch(cfg["arch"]), cfg["activation"], cfg["output_activation"])
    if model.dims[0] != n_inputs or model.dims[-1] != n_classes:
        raise CLIError(
            f"--arch {cfg['arch']} must start at {n_inputs} and end at {n_classes} "
            f"for {args.dataset}"
        )
    trainer = Trainer(
        model,
        rule=cfg["algorithm"],
        lr_inv=cfg["lr_inv"],
        batch_size=cfg["batch_size"],
        lr_double_every=cfg["lr_double_every"],
        seed=cfg["seed"],
        rounding=cfg["rounding"],
    )
    if cfg["algorithm"] == "bp":
        he_init(model, cfg["seed"])
    return trainer, cfg["epochs"], args.preset or "paper"


def cmd_train(args: argparse.Namespace) -> int:
    """Train, saving the model and a log line after every epoch; print the test accuracy.

    The run owns ``--out`` and its log from start to end (see :mod:`.run_files`).
    """
    out = Path(args.out)
    if not out.parent.exists():
        raise CLIError(f"--out: folder {out.parent} does not exist")
    if out.is_dir():
        raise CLIError(f"--out: {out} is a folder; name the model file to write")
    log_path = log_path_for(out)
    with own_run_files(out, log_path):
        return _train(args, out, log_path)


def _train(args: argparse.Namespace, out: Path, log_path: Path) -> int:
    if out.exists() and not (args.resume or args.force):
        raise CLIError(
            f"--out: {out} exists; --resume continues it, --force replaces it with a new run"
        )
    if log_path.exists() and not (args.resume or args.force):
        raise CLIError(f"--out: the log {log_path} exists; --force replaces it with a new run")
    old_log = read_log(log_path) if args.resume and not args.force else []
    if args.arch is not None:
        parse_arch(args.arch)  # fail before the dataset is loaded
    data = load_dataset(args.dataset, data_dir=args.data_dir, verbose=not args.quiet)
    if args.resume:
        trainer, epochs, preset = _resume(args, out)
    else:
        trainer, epochs, preset = _fresh(args, data.train_images.shape[1], len(data.classes))
    given_by = f"{out}: the saved batch size" if args.resume else "--batch-size"
    check_batch_size(trainer.batch_size, len(data.train_labels), args.dataset, given_by)
    model = trainer.model

    def checkpoint() -> bytes:
        state, arrays = trainer.state()
        state.update(dataset=args.dataset, epochs=epochs, preset=preset)
        return to_bytes(model, training=state, extra_arrays=arrays)

    def log_records() -> list[dict]:
        return [dict(vars(r), dataset=args.dataset, seed=trainer.seed) for r in trainer.history]

    if not is_prefix(old_log, log_records()):
        raise CLIError(
            f"--resume: the log {log_path} is not the log of the run in {out}; move it "
            "away, or --force replaces it"
        )
    check_room(out, log_path, len(checkpoint()))
    if args.resume:
        write_log(log_path, log_records())  # a line a kill lost after the model was saved
    if not args.quiet:
        print(
            f"{args.dataset}: {model!r}, {model.n_params} parameters, algorithm "
            f"{trainer.algorithm}, batch {trainer.batch_size}, lr_inv {trainer.lr_inv}, "
            f"rounding {trainer.rounding}, seed {trainer.seed}, engine {args.engine}"
        )

    def save_checkpoint() -> None:
        atomic_write_bytes(out, checkpoint())
        # the model first, then the log from its history: the log never runs ahead of it
        write_log(log_path, log_records())  # a --force run's old log lives until here

    def on_epoch(result: EpochResult) -> None:
        save_checkpoint()
        if not args.quiet:
            print(epoch_line(result, epochs), flush=True)

    bar = ProgressBar("training", not args.quiet)
    done_before = trainer.epoch
    with about(out):  # an overflow names the layer and operation; this adds the run's file
        trainer.fit(
            data.train_images,
            data.train_labels,
            epochs,
            x_test=data.test_images,
            y_test=data.test_labels,
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
        f"test accuracy: {percent(correct, len(data.test_labels))} "
        f"({correct}/{len(data.test_labels)}) after {trainer.epoch} epochs",
        end="",
    )
    if best is not None and best.test_correct:
        print(f"; best {percent(best.test_correct, best.test_total)} at epoch {best.epoch}")
    else:
        print()
    print(f"model saved to {out}, log in {log_path}")
    return 0
