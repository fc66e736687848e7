"""The ``train`` command: a fresh run from the preset and flags, or ``--resume`` of a saved one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..datasets import load_dataset
from ..io.model_file import load_checkpoint, save
from ..nn.architecture import build, calibrate
from ..nn.model import build_mlp
from ..train.augment import Augment
from ..train.seeding import STREAM_VALIDATION, he_init, spread_init, stream
from ..train.trainer import EpochResult, Trainer
from .errors import CLIError
from .presets import (
    IMAGE_SHAPE,
    PAPER_DEFAULTS,
    parse_arch,
    parse_augment,
    parse_pair,
    settings,
)
from .progress import ProgressBar, epoch_line
from .report import percent
from .runlog import append_log, log_path_for

RESUME_FIXED = (
    "preset",
    "algorithm",
    "batch_size",
    "lr_inv",
    "lr_double_every",
    "seed",
    "rounding",
    "decay_inv",
    "grad_bits",
    "target_value",
    "val",
    "augment",
    "plateau",
    "early_stop",
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
    saved_arch = state.get("arch", "-".join(map(str, model.dims)))
    if args.arch is not None and args.arch != saved_arch:
        changed.append(f"--arch {args.arch} (saved: {saved_arch})")
    activations = [getattr(layer, "activation_name", None) for layer in model.layers]
    activations = [a for a in activations if a is not None] or [None]
    for flag, given, saved in (
        ("--activation", args.activation, activations[0]),
        ("--output-activation", args.output_activation, activations[-1]),
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


def _fresh(
    args: argparse.Namespace, x_train: np.ndarray, n_classes: int
) -> tuple[Trainer, int, str, dict]:
    """A new model and trainer from the preset and the flags, and the settings used."""
    cfg = settings(args)
    arch = parse_arch(cfg["arch"])
    if isinstance(arch, list):
        model = build_mlp(arch, cfg["activation"], cfg["output_activation"])
        if model.dims[0] != x_train.shape[1] or model.dims[-1] != n_classes:
            raise CLIError(
                f"--arch {cfg['arch']} must start at {x_train.shape[1]} and end at {n_classes} "
                f"for {args.dataset}"
            )
        if cfg["algorithm"] in ("bp", "local"):
            he_init(model, cfg["seed"])
    else:
        try:
            model = build(cfg["arch"], IMAGE_SHAPE, activation=cfg["activation"])
        except ValueError as exc:  # ArchitectureError names the token and the layer
            raise CLIError(str(exc)) from None
        if model.n_classes != n_classes:
            raise CLIError(f"--arch {cfg['arch']} must end at {n_classes} for {args.dataset}")
        spread_init(model, cfg["seed"])
        calibrate(model, x_train[:256])  # the scaling layers' divisors, from training data
    augment = parse_augment(cfg["augment"])
    trainer = Trainer(
        model,
        rule=cfg["algorithm"],
        lr_inv=cfg["lr_inv"],
        batch_size=cfg["batch_size"],
        lr_double_every=cfg["lr_double_every"],
        seed=cfg["seed"],
        rounding=cfg["rounding"],
        decay_inv=cfg["decay_inv"],
        grad_bits=cfg["grad_bits"],
        plateau=parse_pair("--plateau", cfg["plateau"]),
        target_value=cfg["target_value"],
        augment=None if augment is None else Augment(IMAGE_SHAPE, *augment),
    )
    return trainer, cfg["epochs"], args.preset or "paper", cfg


def validation_split(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(train, validation)`` indices: ``size`` of ``range(n)`` held out."""
    if not 0 <= size < n:
        raise CLIError(f"--val must lie in [0, {n - 1}], got {size}")
    order = stream(seed, STREAM_VALIDATION).permutation(n)
    return np.sort(order[size:]), np.sort(order[:size])


def cmd_train(args: argparse.Namespace) -> int:
    """Train, saving the model and a log line after every epoch; print the test accuracy."""
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
        parse_arch(args.arch)  # fail before the dataset is loaded
    log_path = log_path_for(out)
    data = load_dataset(args.dataset, data_dir=args.data_dir, verbose=not args.quiet)
    if args.resume:
        trainer, epochs, preset = _resume(args, out)
        _, saved, _ = load_checkpoint(out)
        run = {
            key: saved.get(key, PAPER_DEFAULTS.get(key)) for key in ("val", "early_stop", "arch")
        }
    else:
        cfg = settings(args)
        train_idx, _ = validation_split(len(data.train_labels), cfg["val"], cfg["seed"])
        trainer, epochs, preset, run = _fresh(args, data.train_images[train_idx], len(data.classes))
    train_idx, val_idx = validation_split(len(data.train_labels), run["val"] or 0, trainer.seed)
    x_train, y_train = data.train_images[train_idx], data.train_labels[train_idx]
    x_val = data.train_images[val_idx] if len(val_idx) else None
    y_val = data.train_labels[val_idx] if len(val_idx) else None
    model = trainer.model
    if not args.quiet:
        print(
            f"{args.dataset}: {model!r}, {model.n_params} parameters, algorithm "
            f"{trainer.algorithm}, batch {trainer.batch_size}, lr_inv {trainer.lr_inv}, "
            f"rounding {trainer.rounding}, seed {trainer.seed}, engine {args.engine}"
        )

    def save_checkpoint() -> None:
        state, arrays = trainer.state()
        state.update(
            dataset=args.dataset,
            epochs=epochs,
            preset=preset,
            arch=run["arch"],
            val=run["val"],
            early_stop=run["early_stop"],
        )
        save(out, model, training=state, extra_arrays=arrays)

    def on_epoch(result: EpochResult) -> None:
        save_checkpoint()
        # a fresh run's first epoch starts the log over (an old run's log lives until then)
        fresh = not args.resume and result.epoch == 1
        append_log(
            log_path, dict(vars(result), dataset=args.dataset, seed=trainer.seed), fresh=fresh
        )
        if not args.quiet:
            print(epoch_line(result, epochs), flush=True)

    bar = ProgressBar("training", not args.quiet)
    done_before = trainer.epoch
    trainer.fit(
        x_train,
        y_train,
        epochs,
        x_test=data.test_images,
        y_test=data.test_labels,
        x_val=x_val,
        y_val=y_val,
        early_stop=run["early_stop"] or 0,
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
    chosen = trainer.selected()
    if chosen is not None and chosen.test_correct is not None:
        print(
            f"validation-selected epoch {chosen.epoch} (validation "
            f"{percent(chosen.val_correct, chosen.val_total)}): test "
            f"{percent(chosen.test_correct, chosen.test_total)}"
        )
    print(f"model saved to {out}, log in {log_path}")
    return 0
