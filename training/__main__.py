"""Command line: train an MLP on MNIST and ship it as an ONNX model version.

python -m training --data-dir ../shared/data/mnist --out models/mnist-mlp/2
python -m training --quick --out /tmp/models/mnist-mlp/1      # < 1 minute smoke run
python -m training --data-dir ../shared/data/mnist --out models/mnist-mlp/2 --from-run runs/latest
    # re-export and re-measure the checkpoints of an earlier run (no training)
mnist-train --help                                              # same, as a console script
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: spinning worker threads are fast on an idle machine but,
# on 2 cores shared with other jobs, a step ran 7x slower (531 vs 74 ms, measured).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from training.augment import AugmentConfig
from training.model import ModelConfig
from training.pipeline import RunOptions, run
from training.strokes import StyleConfig
from training.train import TrainConfig


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("need at least one positive hidden size")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    dm = ModelConfig()
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train an MLP on MNIST, export ONNX (+int8), evaluate, write the model card.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("data and output")
    io.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="MNIST IDX files (default: $MNIST_DATA_DIR, else ~/.cache/mnist-serve/mnist)",
    )
    io.add_argument(
        "--out",
        type=Path,
        default=Path("models/mnist-mlp/1"),
        help="model version directory models/<name>/<version>",
    )
    io.add_argument("--run-dir", type=Path, default=Path("runs/latest"), help="checkpoints")
    io.add_argument(
        "--from-run",
        type=Path,
        default=None,
        help="skip training: export and measure the checkpoints saved in this run dir",
    )
    io.add_argument(
        "--quick",
        action="store_true",
        help="tiny model, 5k images, 2 epochs: a smoke run in well under a minute",
    )
    io.add_argument("--no-int8", action="store_true", help="skip the int8 variant")
    io.add_argument(
        "--field-n",
        type=int,
        default=1800,
        help="digits rendered for the field benchmark (val and test); 0 skips it",
    )
    io.add_argument(
        "--real-set",
        type=Path,
        default=None,
        help="folder of real handwriting with manifest.csv (python -m evaluation.realset build)"
        " to score for the card",
    )
    io.add_argument("--no-progress", action="store_true", help="no tqdm bars (log lines only)")
    io.add_argument("--no-benchmark", action="store_true", help="skip the ORT throughput run")

    m = p.add_argument_group("model")
    m.add_argument("--hidden", type=_hidden, default=dm.hidden, help="e.g. 1024,1024")
    m.add_argument(
        "--activation",
        choices=["relu", "leaky_relu", "gelu", "tanh", "sigmoid"],
        default=dm.activation,
        help="hidden-layer nonlinearity",
    )
    m.add_argument("--dropout", type=float, default=dm.dropout, help="after each hidden layer")
    m.add_argument("--input-dropout", type=float, default=dm.input_dropout, help="on pixels")
    m.add_argument("--no-batchnorm", action="store_true", help="plain Linear -> activation")
    m.add_argument("--members", type=int, default=1, help="ensemble size (one graph)")

    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=d.epochs, help="upper bound with --max-minutes")
    t.add_argument("--batch-size", type=int, default=d.batch_size, help="mini-batch size")
    t.add_argument(
        "--optimizer", choices=["sgd", "adamw"], default=d.optimizer, help="SGD is Nesterov"
    )
    t.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    t.add_argument("--momentum", type=float, default=d.momentum, help="SGD only")
    t.add_argument(
        "--weight-decay", type=float, default=d.weight_decay, help="L2 on weight matrices"
    )
    t.add_argument("--l1", type=float, default=d.l1, help="L1 penalty on weight matrices")
    t.add_argument(
        "--label-smoothing", type=float, default=d.label_smoothing, help="cross-entropy smoothing"
    )
    t.add_argument(
        "--schedule",
        choices=["onecycle", "cosine", "constant"],
        default=d.schedule,
        help="LR schedule (warmup then cosine decay)",
    )
    t.add_argument("--ema", type=float, default=d.ema_decay, help="EMA decay, 0 = off")
    t.add_argument("--patience", type=int, default=d.patience, help="early stopping, 0 = off")
    t.add_argument("--seed", type=int, default=d.seed, help="ensemble member k uses seed+k")
    t.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-clock training budget (split over ensemble members); the LR schedule "
        "follows whichever of steps or time runs out first",
    )
    t.add_argument(
        "--mild-tail",
        type=float,
        default=d.mild_tail,
        help="final fraction of training on half-strength augmentation",
    )
    t.add_argument("--threads", type=int, default=d.threads, help="torch intra-op threads")
    t.add_argument(
        "--val-size", type=int, default=5000, help="validation digits carved from train (seed 0)"
    )

    a = p.add_argument_group("augmentation")
    a.add_argument("--no-augment", action="store_true", help="train on clean digits only")
    da = AugmentConfig()
    a.add_argument("--elastic-p", type=float, default=da.elastic_p, help="elastic share")
    a.add_argument("--rotate", type=float, default=da.rotate_deg, help="max degrees")
    a.add_argument("--translate", type=float, default=da.translate_px, help="max pixels")
    a.add_argument("--stroke-p", type=float, default=da.stroke_p, help="dilate/erode share")
    a.add_argument("--blur-p", type=float, default=da.blur_p, help="blurred share")
    a.add_argument("--intensity-p", type=float, default=da.intensity_p, help="gain/gamma share")
    a.add_argument("--noise-p", type=float, default=da.noise_p, help="noisy share")
    a.add_argument("--marker-p", type=float, default=da.marker_p, help="2 px thicker share")
    a.add_argument("--grain-p", type=float, default=da.grain_p, help="pencil-grain share")
    ds = StyleConfig()
    a.add_argument("--no-styles", action="store_true", help="no European 1s / crossed 7s / open 4s")
    a.add_argument("--one-flag-p", type=float, default=ds.one_flag_p, help="flagged share of 1s")
    a.add_argument("--seven-bar-p", type=float, default=ds.seven_bar_p, help="crossed 7s share")
    a.add_argument("--open-four-p", type=float, default=ds.open_four_p, help="open 4s share")
    return p


def configs_from_args(args: argparse.Namespace) -> tuple[TrainConfig, RunOptions]:
    model = ModelConfig(
        hidden=args.hidden,
        activation=args.activation,
        dropout=args.dropout,
        input_dropout=args.input_dropout,
        batchnorm=not args.no_batchnorm,
    )
    augment = AugmentConfig(
        elastic_p=args.elastic_p,
        rotate_deg=args.rotate,
        translate_px=args.translate,
        stroke_p=args.stroke_p,
        blur_p=args.blur_p,
        intensity_p=args.intensity_p,
        noise_p=args.noise_p,
        marker_p=args.marker_p,
        grain_p=args.grain_p,
    )
    styles = StyleConfig(
        one_flag_p=args.one_flag_p, seven_bar_p=args.seven_bar_p, open_four_p=args.open_four_p
    )
    config = TrainConfig(
        model=model,
        augment=None if args.no_augment else augment,
        styles=None if args.no_styles else styles,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        l1=args.l1,
        label_smoothing=args.label_smoothing,
        schedule=args.schedule,
        ema_decay=args.ema,
        patience=args.patience,
        seed=args.seed,
        threads=args.threads,
        mild_tail=args.mild_tail,
        time_budget=None if args.max_minutes is None else args.max_minutes * 60 / args.members,
    )
    options = RunOptions(
        out=args.out,
        data_dir=args.data_dir,
        run_dir=args.run_dir,
        members=args.members,
        val_size=args.val_size,
        int8=not args.no_int8,
        field_n=args.field_n,
        progress=not args.no_progress,
        benchmark=not args.no_benchmark,
        from_run=args.from_run,
        real_set=args.real_set,
    )
    if args.quick:
        config = replace(config, model=replace(model, hidden=(128,)), epochs=2, batch_size=128)
        field_n = min(options.field_n, 130)
        options = replace(options, train_limit=5000, val_size=1000, field_n=field_n)
    return config, options


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    config, options = configs_from_args(args)
    options.command = shlex.join(["python", "-m", "training", *argv])
    run(config, options)


if __name__ == "__main__":
    main()
