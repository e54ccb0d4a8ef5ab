"""The ``selfsup`` command line: parses arguments, builds a config, calls the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from selfsup import __version__
from selfsup import config as config_module
from selfsup.config import Config, ConfigError

EXAMPLES = """\
examples:
  selfsup pretrain --budget 15m                      SimCLR on Fashion-MNIST for 15 minutes
  selfsup pretrain --method siamese-naive --data digits --epochs 5
  selfsup pretrain --data ./my_images --backbone resnet18-small train.lr=0.5
  selfsup pretrain --resume runs/simclr-fashion-mnist-20261124-101500
  selfsup evaluate runs/simclr-fashion-mnist-20261124-101500
  selfsup embed runs/simclr-fashion-mnist-20261124-101500 --data ./my_images --out features.npy
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfsup", description="Self-supervised learning on PyTorch.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"selfsup {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    pretrain = commands.add_parser("pretrain", help="train an encoder, evaluate it, print a summary table")
    pretrain.add_argument("--method", help="SSL method (see `selfsup methods`); default simclr")
    pretrain.add_argument("--data", help="fashion-mnist, digits, or a folder of images; default fashion-mnist if installed")
    pretrain.add_argument("--backbone", help="backbone name; default convnet-small")
    length = pretrain.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="passes over the data")
    pretrain.add_argument("--budget", help="wall-clock training budget, e.g. 15m, 90s, 2h")
    pretrain.add_argument("--batch-size", type=int)
    pretrain.add_argument("--seed", type=int)
    pretrain.add_argument("--labels-per-class", type=int, help="semi-supervised methods (paws): labels per class the run may use")
    pretrain.add_argument("--out", help="run directory (default runs/<method>-<data>-<time>)")
    pretrain.add_argument("--config", type=Path, help="YAML file with config sections (data, backbone, method, train, ...)")
    length.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped run from its last checkpoint")
    pretrain.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=0.3 method.temperature=0.2")

    evaluate = commands.add_parser("evaluate", help="evaluate a run's newest checkpoint and update summary.json")
    evaluate.add_argument("run_dir", type=Path)

    embed = commands.add_parser("embed", help="write backbone features of a data source to a .npy file")
    embed.add_argument("run_dir", type=Path)
    embed.add_argument("--data", required=True, help="fashion-mnist, digits, or a folder of images")
    embed.add_argument("--out", required=True, type=Path, help="output .npy file")
    embed.add_argument("--batch-size", type=int, default=512)

    commands.add_parser("methods", help="list the methods, one line each")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    config = config_module.load(args.config) if args.config else Config()
    flags = {
        "method.name": args.method,
        "data.source": args.data,
        "backbone.name": args.backbone,
        "train.epochs": args.epochs,
        "train.budget": args.budget,
        "train.batch_size": args.batch_size,
        "train.seed": args.seed,
        "out": args.out,
    }
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None]
    if args.method is not None:
        # A new method starts from its own defaults, not from another method's options.
        config.method = {"name": args.method}
    if args.labels_per_class is not None:
        overrides.append(f"method.labels_per_class={args.labels_per_class}")
    return config_module.apply_overrides(config, overrides + list(args.overrides))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from selfsup.data import DataError
    from selfsup.train.checkpoint import CheckpointError
    from selfsup.train.trainer import TrainingDiverged

    try:
        return _run(args)
    except (ConfigError, DataError, CheckpointError, TrainingDiverged) as error:
        # Errors meant for the user (bad config, bad data, divergence) end in one clear line.
        print(f"selfsup {args.command}: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1
    except KeyboardInterrupt:
        print(f"selfsup {args.command}: interrupted; resume with --resume RUN_DIR", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    # Imported here so that `selfsup methods` and argument errors answer at once.
    from selfsup import runs
    from selfsup.report import format_summary, format_table

    if args.command == "methods":
        from selfsup.methods import METHODS

        print(format_table(["method", "description"], [[name, cls.summary] for name, cls in METHODS.items()]))
        return 0
    if args.command == "pretrain":
        if args.resume is not None:
            extra = [name for name in ("method", "data", "backbone", "budget", "batch_size", "seed", "labels_per_class", "out", "config") if getattr(args, name)]
            if extra or args.overrides:
                raise ConfigError(f"--resume continues a run with its own config.yaml; drop {', '.join('--' + e.replace('_', '-') for e in extra) or 'the overrides'}")
            summary = runs.pretrain(Config(), resume_dir=args.resume)
        else:
            summary = runs.pretrain(config_from_args(args))
        from selfsup import distributed

        if distributed.is_main_process():  # under torchrun, one table
            print(format_summary(summary))
        return 0
    if args.command == "evaluate":
        print(format_summary(runs.evaluate_run(args.run_dir)))
        return 0
    if args.command == "embed":
        result = runs.embed_to_file(args.run_dir, args.data, args.out, args.batch_size)
        print(format_table(["rows", "dim", "skipped", "file"], [[result["rows"], result["dim"], result["skipped"], result["out"]]]))
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
