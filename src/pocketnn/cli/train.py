"""The ``train`` command: a fresh run from the preset and flags, or ``--resume`` of a saved one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..io.atomic import atomic_write_bytes
from ..io.model_file import load_checkpoint, load_model_file, to_bytes
from ..nn.architecture import build, calibrate
from ..nn.layers import Scale
from ..nn.model import build_mlp
from ..train.augment import Augment
from ..train.momentum import MomentumSGD
from ..train.optimizer import IntegerSGD
from ..train.rules import Backprop
from ..train.seeding import fixed_point_init, he_init, spread_init
from ..train.trainer import EpochResult, Trainer
from .data import data_name, data_path, load_data, model_arrays, split_settings
from .errors import CLIError, about
from .logs import read_log
from .presets import IMAGE_SHAPE, parse_arch, parse_augment, parse_pair, settings
from .progress import ProgressBar, epoch_line
from .report import percent
from .run_files import check_room, own_run_files
from .runlog import is_prefix, log_path_for, write_log
from .validate import check_batch_size

RESUME_FIXED = (
    "preset",
    "algorithm",
    "batch_size",
    "lr_inv",
    "lr_double_every",
    "seed",
    "rounding",
    "val",
    "label_column",
    "test_percent",
    "split_seed",
    "decay_inv",
    "grad_bits",
    "target_value",
    "augment",
    "plateau",
    "early_stop",
    "frac_bits",
    "momentum",
    "loss",
    "bp_weights",
)
DEFAULT_HIDDEN = "100-50"
"""Hidden widths of a network for ``--data`` without ``--arch`` (the paper MNIST net's)."""


def _same(key: str, given: object, saved: object) -> bool:
    """Whether a flag given to ``--resume`` says what the checkpoint saved (``--augment 2``
    is saved as the augmentation's settings)."""
    if key == "augment":
        parsed = parse_augment(given)
        return isinstance(saved, dict) and (saved.get("shift"), saved.get("flip")) == parsed
    return given == saved


def _resume(args: argparse.Namespace, out: Path) -> tuple[Trainer, int, str]:
    """The trainer saved in ``out``, refusing flags that would change the run."""
    if not out.exists():
        raise CLIError(f"--resume: {out} does not exist yet; start without --resume")
    model, state, arrays = load_checkpoint(out)
    if not state:
        raise CLIError(f"--resume: {out} holds no training state")
    if state.get("dataset") != args.dataset or state.get("data") != data_path(args):
        raise CLIError(
            f"--resume: {out} was trained on {state.get('dataset') or state.get('data')}, "
            f"not {data_name(args)}"
        )
    changed = [
        f"--{key.replace('_', '-')} {getattr(args, key)} (saved: {state.get(key)})"
        for key in RESUME_FIXED
        if getattr(args, key) is not None and not _same(key, getattr(args, key), state.get(key))
    ]
    saved_arch = state.get("arch") or "-".join(map(str, model.dims))
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


def _fresh(args: argparse.Namespace, spec, n_classes: int) -> tuple[Trainer, int, str, dict]:
    """A new model and trainer from the preset and the flags, and the settings used. A CNN's
    scaling layers are calibrated later, on the training data (:func:`calibrate`)."""
    cfg = settings(args)
    n_inputs = spec.size
    arch = cfg["arch"] or f"{n_inputs}-{DEFAULT_HIDDEN}-{n_classes}"
    shape = parse_arch(arch)
    fixed_point = cfg["frac_bits"] > 0
    if isinstance(shape, list) and not fixed_point:
        model = build_mlp(shape, cfg["activation"], cfg["output_activation"])
        if model.dims[0] != n_inputs or model.dims[-1] != n_classes:
            raise CLIError(
                f"--arch {arch} must start at {n_inputs} and end at {n_classes} "
                f"for {data_name(args)}"
            )
        if cfg["algorithm"] in ("bp", "local"):
            he_init(model, cfg["seed"])
    else:
        image = spec.shape if len(spec.shape) == 3 else IMAGE_SHAPE
        if len(spec.shape) == 2:
            image = (1, *spec.shape)
        if isinstance(shape, list):  # a fixed-point MLP takes the samples flat
            image = (n_inputs,)
        try:
            model = build(
                arch,
                image,
                activation=cfg["activation"],
                input_bound=spec.high,
                frac_bits=cfg["frac_bits"],
            )
        except ValueError as exc:  # ArchitectureError names the token and the layer
            raise CLIError(str(exc)) from None
        if model.n_classes != n_classes:
            raise CLIError(f"--arch {arch} must end at {n_classes} for {data_name(args)}")
        (fixed_point_init if fixed_point else spread_init)(model, cfg["seed"])
    augment = parse_augment(cfg["augment"])
    image_shape = model.input_shape if len(model.input_shape) == 3 else IMAGE_SHAPE
    sgd = {
        "lr_inv": cfg["lr_inv"],
        "lr_double_every": cfg["lr_double_every"],
        "seed": cfg["seed"],
        "rounding": cfg["rounding"],
        "decay_inv": cfg["decay_inv"],
        "plateau": parse_pair("--plateau", cfg["plateau"]),
    }
    try:
        if cfg["momentum"]:  # its total steps are set once the training set is known
            optimizer: IntegerSGD = MomentumSGD(momentum=cfg["momentum"], **sgd)
        else:
            optimizer = IntegerSGD(grad_bits=cfg["grad_bits"], **sgd)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    rule = cfg["algorithm"]
    if rule == "bp":
        rule = Backprop(updated_weights=cfg["bp_weights"] == "updated")
    trainer = Trainer(
        model,
        rule=rule,
        optimizer=optimizer,
        batch_size=cfg["batch_size"],
        seed=cfg["seed"],
        target_value=cfg["target_value"],
        loss=cfg["loss"],
        augment=None if augment is None else Augment(image_shape, *augment),
    )
    return trainer, cfg["epochs"], args.preset or "paper", {"arch": arch, **cfg}


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
    resumes_log = args.resume and not args.force and log_path.exists()
    old_log = read_log(log_path) if resumes_log else []
    if args.arch is not None:
        parse_arch(args.arch)  # fail before the dataset is loaded
    saved_file = load_model_file(out) if args.resume and out.exists() else None
    saved = saved_file.training if saved_file else None
    data = load_data(args, saved, verbose=not args.quiet)
    spec = data.input_spec
    if args.resume:
        trainer, epochs, preset = _resume(args, out)
        run = dict(saved or {})
        saved_spec = saved_file.input_spec
        if (saved_spec.dtype, saved_spec.shape) != (spec.dtype, spec.shape):
            raise CLIError(
                f"--resume: {out} takes {saved_spec.dtype} samples of shape {saved_spec.shape}, "
                f"{data_name(args)} gives {spec.dtype} {spec.shape}"
            )
    else:
        trainer, epochs, preset, run = _fresh(args, spec, len(data.classes))
    model = trainer.model
    split = split_settings(args, saved)
    if args.data is None:  # a named dataset has its own test set: only --val splits it
        split = {"split_seed": split["split_seed"]}
    val = args.val if args.val is not None else run.get("val") or 0
    arrays = model_arrays(data, model.input_shape, val, split["split_seed"], data_name(args))
    fixed_point = any(getattr(layer.config, "frac_bits", 0) for layer in model.layers)
    if not args.resume and not fixed_point and any(isinstance(x, Scale) for x in model.layers):
        calibrate(model, arrays.x_train[:256])  # the scaling layers' divisors, from training data
    if not args.resume and isinstance(trainer.optimizer, MomentumSGD):  # decays over the run
        steps = -(-len(arrays.y_train) // trainer.batch_size)
        trainer.optimizer.total_steps = steps * epochs
    early_stop = run.get("early_stop") or 0
    if args.batch_size is not None:  # a preset's batch may cover a small set whole
        check_batch_size(args.batch_size, len(arrays.y_train), data_name(args))
    if not args.quiet:
        print(
            f"{data_name(args)}: {model!r}, {model.n_params} parameters, algorithm "
            f"{trainer.algorithm}, batch {trainer.batch_size}, lr_inv {trainer.lr_inv}, "
            f"rounding {trainer.rounding}, seed {trainer.seed}, engine {args.engine}"
        )

    def checkpoint() -> bytes:
        state, arrays = trainer.state()
        state.update(dataset=args.dataset, data=data_path(args), epochs=epochs, preset=preset)
        state.update(val=val, early_stop=early_stop)
        state.update(arch=run.get("arch") or "-".join(map(str, model.dims)))
        state.update(classes=list(data.classes))
        state.update(split)
        return to_bytes(model, training=state, extra_arrays=arrays, input_spec=spec)

    def log_records() -> list[dict]:
        name = data_name(args)
        return [dict(vars(r), dataset=name, seed=trainer.seed) for r in trainer.history]

    if not is_prefix(old_log, log_records()):
        raise CLIError(
            f"--resume: the log {log_path} is not the log of the run in {out}; move it "
            "away, or --force replaces it"
        )
    check_room(out, log_path, len(checkpoint()))
    if args.resume:
        write_log(log_path, log_records())  # a line a kill lost after the model was saved

    def save_checkpoint() -> None:
        atomic_write_bytes(out, checkpoint())
        # the model first, then the log from its history: the log never runs ahead of it
        write_log(log_path, log_records())  # a --force run's old log lives until here

    def on_epoch(result: EpochResult) -> None:
        save_checkpoint()
        if not args.quiet:
            print(epoch_line(result, epochs), flush=True)
        if args.epoch_hook is not None:  # a sweep: report, maybe stop early
            args.epoch_hook(result)

    bar = ProgressBar("training", not args.quiet)
    done_before = trainer.epoch
    with about(out):  # an overflow names the layer and operation; this adds the run's file
        trainer.fit(
            arrays.x_train,
            arrays.y_train,
            epochs,
            x_test=arrays.x_test,
            y_test=arrays.y_test,
            x_val=arrays.x_val,
            y_val=arrays.y_val,
            early_stop=early_stop,
            on_epoch=on_epoch,
            progress=bar,
        )
    if trainer.epoch == done_before:  # no epoch to run: still write the model asked for
        save_checkpoint()
    last = trainer.history[-1] if trainer.history else None
    if last is not None and last.test_correct is not None:
        correct = last.test_correct  # the model is the one saved after that epoch
    else:
        correct = model.count_correct(arrays.x_test, arrays.y_test)
    best = max(trainer.history, key=lambda r: r.test_correct or 0, default=None)
    print(
        f"test accuracy: {percent(correct, len(data.test_labels))} "
        f"({correct}/{len(data.test_labels)}) after {trainer.epoch} epochs",
        end="",
    )
    if best is not None and best.test_correct and len(trainer.history) > 1:
        # the figure papers report; printed as what it is, never as a result
        print(
            f"; highest of any epoch, read off the test set: "
            f"{percent(best.test_correct, best.test_total)} at epoch {best.epoch}"
        )
    else:
        print()
    chosen = max(trainer.history, key=lambda r: r.val_correct or 0, default=None)
    if chosen is not None and chosen.val_total and chosen.test_total:
        print(
            f"best validation accuracy {percent(chosen.val_correct, chosen.val_total)} at "
            f"epoch {chosen.epoch}, where the test accuracy is "
            f"{percent(chosen.test_correct, chosen.test_total)}"
        )
    print(f"model saved to {out}, log in {log_path}")
    return 0
