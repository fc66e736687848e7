"""The command line's grammar: global options, the subcommands and their flags."""

from __future__ import annotations

import argparse

from .. import __version__
from ..core.context import DEFAULT_ENGINE, ENGINES, OVERFLOW_POLICIES
from ..io.limits import DEFAULT_MAX_INPUT
from ..nn.losses import LOSSES
from ..train.optimizer import ROUNDINGS
from ..train.trainer import ALGORITHMS
from .data import add_data_arguments
from .errors import CLIError
from .evaluate import cmd_evaluate
from .export_c import cmd_export_c
from .info import cmd_info
from .plot import cmd_plot
from .predict import cmd_predict
from .presets import PAPER_ARCHS, PRESETS
from .sweep import cmd_sweep
from .train import cmd_train
from .validate import ascii_int, byte_size


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register("type", int, ascii_int)  # every type=int flag: ASCII digits only

    def error(self, message: str) -> None:  # one line instead of usage + message
        raise CLIError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The ``pocketnn`` parser; each subcommand sets ``func``, the command to run."""
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
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads the compiled engine may use (default 1); the bits are the same for any",
    )
    p.add_argument(
        "--max-input",
        type=byte_size,
        default=DEFAULT_MAX_INPUT,
        metavar="SIZE",
        help="largest input file (model, data, image) read, decompressed (default 256M)",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a network on MNIST, Fashion-MNIST or your data")
    add_data_arguments(t, sorted(PAPER_ARCHS))
    t.add_argument(
        "--val", type=int, help="hold out N training samples (seeded) for validation (default 0)"
    )
    t.add_argument("--preset", choices=sorted(PRESETS), help="hyperparameters (default paper)")
    t.add_argument("--arch", help="MLP widths (784-100-50-10) or a CNN (c32k3-p2-c64k3-p2-f256-10)")
    t.add_argument("--activation", help="hidden activation (default pocket_tanh)")
    t.add_argument("--output-activation", help="output activation (default: as hidden)")
    t.add_argument(
        "--algorithm",
        "--rule",
        dest="algorithm",
        choices=ALGORITHMS,
        help="learning rule: dfa, bp or local (block-local losses)",
    )
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
    t.add_argument("--augment", help="random shifts of up to N pixels: N, or N,flip")
    t.add_argument(
        "--decay-inv",
        type=int,
        help="integer weight decay: W -= W / N per step; with --momentum, "
        "W * lr_inv / N joins the gradient (0: off)",
    )
    t.add_argument("--grad-bits", type=int, help="normalise each step's gradient (0: off)")
    t.add_argument("--plateau", help="P,F: lr_inv times F after P epochs without better val")
    t.add_argument("--early-stop", type=int, help="stop after N epochs without better val")
    t.add_argument("--target-value", type=int, help="one-hot target value (default 15)")
    t.add_argument(
        "--frac-bits", type=int, help="fixed-point layers: weights with N fractional bits (0: off)"
    )
    t.add_argument(
        "--momentum",
        type=int,
        help="momentum 1 - 2**-M with a step falling linearly to zero over the run (0: off)",
    )
    t.add_argument("--loss", choices=sorted(LOSSES), help="l2 (default) or softmax")
    t.add_argument(
        "--bp-weights",
        choices=("updated", "current"),
        help="backprop through each layer's updated weights (the reference) or current ones",
    )
    t.add_argument("--out", required=True, help="model file, saved after every epoch")
    t.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    t.add_argument("--force", action="store_true", help="replace an existing --out file")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train, epoch_hook=None)  # a sweep's per-epoch report

    e = sub.add_parser("evaluate", help="test accuracy and confusion matrix")
    e.add_argument("model")
    add_data_arguments(e, sorted(PAPER_ARCHS))
    e.add_argument("--plot", help="also save the confusion matrix as an image (PNG, SVG, PDF)")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser(
        "predict", help="classify 28x28 images (PNG, PGM or idx), or --data rows (.npz, CSV, PNG)"
    )
    pr.add_argument("model")
    pr.add_argument("files", nargs="+")
    pr.add_argument("--invert", action="store_true", help="dark digits on light ground")
    pr.set_defaults(func=cmd_predict)

    i = sub.add_parser("info", help="architecture, parameter counts, value ranges")
    i.add_argument("model")
    i.set_defaults(func=cmd_info)

    pl = sub.add_parser("plot", help="accuracy and loss curves of runs, from their logs")
    pl.add_argument("logs", nargs="+", metavar="RUN.log.jsonl")
    pl.add_argument("--out", required=True, help="picture to write (.png, .svg or .pdf)")
    pl.add_argument("--title")
    pl.set_defaults(func=cmd_plot)

    sw = sub.add_parser("sweep", help="runs over seeds and settings from a TOML spec, a table")
    sw.add_argument("spec", help="the sweep spec (TOML); see pocketnn.sweep.spec")
    sw.add_argument("--out", help="the sweep's folder (default: out in the spec's [sweep])")
    sw.add_argument("--workers", type=int, help="runs at a time (default: one per core)")
    sw.add_argument("--ray", metavar="ADDRESS", help="run on this Ray cluster (ray extra)")
    sw.add_argument("--table-only", action="store_true", help="print the tables, run nothing")
    sw.set_defaults(func=cmd_sweep)

    x = sub.add_parser("export-c", help="generate C99 for a microcontroller without an FPU")
    x.add_argument("model")
    x.add_argument("--out", required=True, help="output folder")
    x.add_argument("--name", default="model", help="C identifier prefix")
    x.add_argument(
        "--with-training",
        action="store_true",
        help="include the training step (DFA; backprop with momentum for fixed-point MLPs)",
    )
    x.add_argument("--max-batch", type=int, help="largest on-device batch (default: trained)")
    x.add_argument("--report", action="store_true", help="print the Cortex-M0 footprint")
    x.set_defaults(func=cmd_export_c)
    return p
