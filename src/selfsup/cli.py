"""The ``selfsup`` command line: parses arguments, builds a config, calls the library."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from selfsup import __version__
from selfsup import config as config_module
from selfsup.config import Config, ConfigError

# Exit codes: 0 done, 1 a bug (with its traceback), 2 bad input (usage, config, data, a
# checkpoint), 3 training diverged (the last good checkpoint is kept), 128 + the signal when
# SIGTERM or SIGINT stopped training after a checkpoint (143, 130), 130 interrupted otherwise.
EXIT_BAD_INPUT, EXIT_DIVERGED = 2, 3
# Options whose value may start with "-" (a negative budget is an error to name, not a flag).
_VALUE_OPTIONS = ("--budget", "--epochs", "--batch-size", "--seed", "--labels-per-class")

# The method a --modality runs when --method is not given (images: the config's simclr).
DEFAULT_METHODS = {"text": "mlm", "video": "lvp"}

EXAMPLES = """\
examples:
  selfsup pretrain --budget 15m                      SimCLR on Fashion-MNIST for 15 minutes
  selfsup recipes                                    the named recipes (seer, dino-vit-small, ...)
  torchrun --nproc_per_node 8 -m selfsup.cli pretrain --recipe seer --data ./images
  selfsup plan --recipe seer --gpus 512 --gpu v100 --images 1000000000 --epochs 1
  selfsup pretrain --method siamese-naive --data digits --epochs 5
  selfsup pretrain --data ./my_images --backbone resnet18-small train.lr=0.5
  selfsup pretrain --resume runs/simclr-fashion-mnist-20261124-101500
  selfsup evaluate runs/simclr-fashion-mnist-20261124-101500
  selfsup runs                                       every run in ./runs with its state
  selfsup show ./my_images --views --method dino     my images and their DINO views, drawn to show.png
  selfsup embed runs/simclr-fashion-mnist-20261124-101500 --data ./my_images --out features.npy
  selfsup shards ./my_images --out shards/my_images --max-size 1GB   tar shards for streaming
  selfsup pretrain --modality text --method mlm --budget 15m   BERT-style MLM on the stdlib docstrings
  selfsup fill-mask runs/mlm-stdlib-docs-20261124-101500 "Return the [MASK] of the list."
  selfsup embed runs/mlm-stdlib-docs-20261124-101500 --text "Open a file." --out sentence.npy
  selfsup pretrain --modality text --method word2vec --epochs 5
  selfsup similar-words runs/word2vec-stdlib-docs-20261124-101500 socket
  selfsup pretrain --modality video --method lvp --budget 15m   futures of moving sprites through a latent z
  selfsup predict runs/lvp-moving-sprites-20261124-101500 --samples 8
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfsup", description="Self-supervised learning on PyTorch.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"selfsup {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    pretrain = commands.add_parser("pretrain", help="train an encoder, evaluate it, print a summary table")
    pretrain.add_argument("--modality", choices=("image", "text", "video"), help="what to learn from; default: the method's (image for simclr)")
    pretrain.add_argument("--method", help="SSL method (see `selfsup methods`); default simclr, mlm with --modality text, lvp with --modality video")
    pretrain.add_argument("--data", help="images: fashion-mnist, digits or a folder (default fashion-mnist if installed); "
                          "text: stdlib-docs (default), python-docs, or .txt/.md/.rst files; "
                          "video: moving-sprites (default), moving-sprites:fashion-mnist or moving-sprites:digits")
    pretrain.add_argument("--backbone", help="backbone name; default convnet-small")
    pretrain.add_argument("--epochs", type=int, help="passes over the data (with --resume: train a finished run longer)")
    pretrain.add_argument("--budget", help="wall-clock training budget, e.g. 15m, 90s, 2h (with --resume: a longer one)")
    pretrain.add_argument("--batch-size", type=int)
    pretrain.add_argument("--seed", type=int)
    pretrain.add_argument("--labels-per-class", type=int, help="semi-supervised methods (paws): labels per class the run may use")
    pretrain.add_argument("--out", help="run directory (default runs/<method>-<data>-<time>)")
    start = pretrain.add_mutually_exclusive_group()
    start.add_argument("--config", type=Path, help="YAML file with config sections (data, backbone, method, train, ...)")
    start.add_argument("--recipe", help="a named recipe to start from (see `selfsup recipes`), e.g. seer, dino-vit-small")
    pretrain.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped run from its last checkpoint")
    pretrain.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=0.3 method.temperature=0.2")

    evaluate = commands.add_parser("evaluate", help="evaluate a run's newest checkpoint and update summary.json")
    evaluate.add_argument("run_dir", type=Path)

    reconstruct = commands.add_parser("reconstruct", help="draw a masked autoencoder's reconstructions of held-out images")
    reconstruct.add_argument("run_dir", type=Path)
    reconstruct.add_argument("--out", type=Path, help="PNG file (default RUN_DIR/reconstructions.png)")
    reconstruct.add_argument("--count", type=int, default=12, help="images drawn (default 12)")

    finetune = commands.add_parser("finetune", help="fine-tune an image run's encoder end to end on a few labels per class")
    finetune.add_argument("run_dir", type=Path)
    finetune.add_argument("--labels-per-class", type=int, default=10, help="labelled images per class (default 10)")
    finetune.add_argument("--epochs", type=int, default=100, help="passes over those images (default 100)")
    finetune.add_argument("--seeds", type=int, default=1, help="draws of the labelled images, averaged (default 1)")

    embed = commands.add_parser("embed", help="write features of a data source or of texts to a .npy file")
    embed.add_argument("run_dir", type=Path)
    source = embed.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="fashion-mnist, digits, or a folder of images")
    source.add_argument("--text", action="append", help="a text to embed with a text run (repeat for several)")
    embed.add_argument("--tokens", action="store_true", help="text: one contextual embedding per token, not per text")
    embed.add_argument("--out", type=Path, help="output .npy file (required with --data)")
    embed.add_argument("--batch-size", type=int, default=512)

    fill = commands.add_parser("fill-mask", help="the most likely tokens for each [MASK] of a text (masked language models)")
    fill.add_argument("run_dir", type=Path)
    fill.add_argument("text", help='e.g. "This is [MASK] cat."')
    fill.add_argument("--top-k", type=int, default=5)

    similar = commands.add_parser("similar-words", help="the nearest words of a word in a static model (word2vec, glove)")
    similar.add_argument("run_dir", type=Path)
    similar.add_argument("word")
    similar.add_argument("--top-k", type=int, default=10)

    predict = commands.add_parser("predict", help="draw sampled futures of held-out clips to a PNG grid (video runs)")
    predict.add_argument("run_dir", type=Path)
    predict.add_argument("--samples", type=int, default=8, help="futures per clip (K), one latent each")
    predict.add_argument("--clips", type=int, default=4, help="held-out clips to draw")
    predict.add_argument("--seed", type=int, default=0, help="seed of the sampled latents")
    predict.add_argument("--out", type=Path, help="PNG file (default RUN_DIR/futures-K<samples>.png)")

    runs = commands.add_parser("runs", help="list the runs in a folder with their state (running, finished, stopped, failed)")
    runs.add_argument("root", type=Path, nargs="?", default=Path("runs"), help="folder of run directories (default: runs)")
    runs.add_argument("--sort", metavar="COLUMN", help="sort by a column: numbers largest first, text a-z (e.g. knn, 10-shot, auc, step)")
    runs.add_argument("--where", metavar="COLUMN=VALUE", action="append", default=[],
                      help="keep runs whose column equals VALUE (repeatable), e.g. --where method=simclr --where state=finished")

    report = commands.add_parser("report", help="write report.html for one run, or a side-by-side comparison of several")
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", type=Path, help="HTML file (default RUN_DIR/report.html for one run, ./report.html for several)")

    export = commands.add_parser("export", help="write a run's encoder for other runtimes (ONNX, torch.export, safetensors)")
    export.add_argument("run_dir", type=Path)
    export.add_argument("--format", default="onnx", help="onnx (default), pt2 (torch.export; also: torchscript) or safetensors")
    export.add_argument("--out", type=Path, help="output file (default RUN_DIR/export/<backbone>.<format>)")
    export.add_argument("--projector", action="store_true", help="include the projection head after the backbone")

    neighbors = commands.add_parser("neighbors", help="the nearest images of a query image or folder by the run's encoder, printed and drawn")
    neighbors.add_argument("run_dir", type=Path)
    neighbors.add_argument("--query", required=True, help="an image file or a folder of images")
    neighbors.add_argument("--data", required=True, help="the collection searched: fashion-mnist, digits or a folder of images")
    neighbors.add_argument("-k", type=int, default=8, help="neighbours per query (default 8)")
    neighbors.add_argument("--out", type=Path, help="PNG grid (default RUN_DIR/neighbors.png)")
    neighbors.add_argument("--batch-size", type=int, default=512)

    show = commands.add_parser("show", help="draw images of a data source as the model will see them, or their augmented views")
    show.add_argument("source", help="fashion-mnist, digits or a folder of images")
    show.add_argument("--out", type=Path, default=Path("show.png"), help="PNG file (default show.png)")
    show.add_argument("--views", action="store_true", help="one row per image: the image, then its views under the method's recipe")
    show.add_argument("--count", type=int, default=64, help="images drawn, spread through the source (default 64; 16 with --views)")
    show.add_argument("--method", help="whose augmentation recipe --views uses (default simclr)")
    show_start = show.add_mutually_exclusive_group()
    show_start.add_argument("--config", type=Path, help="YAML config whose data and augment sections apply")
    show_start.add_argument("--recipe", help="a named recipe whose data and augment sections apply")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.size=64 augment.recipe=dino")

    shards = commands.add_parser("shards", help="pack an image source into WebDataset tar shards with a JSON index")
    shards.add_argument("source", help="fashion-mnist, digits or a folder of images")
    shards.add_argument("--out", type=Path, required=True, help="folder of the shards; run the same command again to continue an interrupted pack")
    shard_limit = shards.add_mutually_exclusive_group()
    shard_limit.add_argument("--max-count", type=int, metavar="N", help="samples per shard (default 10,000)")
    shard_limit.add_argument("--max-size", metavar="SIZE", help="largest shard file: 1GB, 500MB, 64KB or bytes")
    shards.add_argument("--size", type=int, metavar="N", help="store each image resized to shorter side N (default: the original files)")
    shards.add_argument("--workers", type=int, default=2, metavar="N", help="processes reading and checking images (default 2; 0: this one)")

    commands.add_parser("methods", help="list the methods by modality, one line each")
    commands.add_parser("recipes", help="list the named recipes that --recipe takes")

    plan = commands.add_parser("plan", help="what a run costs before running it: parameters, memory per GPU, FLOPs, time")
    plan.add_argument("--recipe", default="cpu", help="recipe to plan (see `selfsup recipes`; default cpu)")
    plan.add_argument("--gpus", type=int, default=1, help="number of GPUs (default 1)")
    plan.add_argument("--gpu", default="a100", help="GPU model: v100, a100, h100 or h200 (default a100)")
    plan.add_argument("--images", type=int, help="images per epoch (default ImageNet-1k's 1,281,167)")
    plan.add_argument("--epochs", type=float, help="passes over the images (default the recipe's)")
    plan.add_argument("--utilisation", type=float, help="share of the dense peak the run sustains (default 0.12, calibrated on SEER)")
    plan.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides on the recipe, e.g. train.batch_size=32")
    return parser


def _values_not_flags(argv: list[str]) -> list[str]:
    """``--budget -5m`` as ``--budget=-5m``, so that the value reaches its check."""
    joined: list[str] = []
    for item in argv:
        if joined and joined[-1] in _VALUE_OPTIONS and item.startswith("-") and item[1:2].isdigit():
            joined[-1] = f"{joined[-1]}={item}"
        else:
            joined.append(item)
    return joined


def config_from_args(args: argparse.Namespace) -> Config:
    from selfsup.recipes import load_recipe

    config = load_recipe(args.recipe) if args.recipe else config_module.load(args.config) if args.config else Config()
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
    if args.method is None and args.modality in DEFAULT_METHODS and not (args.config or args.recipe):
        flags["method.name"] = args.method = DEFAULT_METHODS[args.modality]
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None]
    if args.method is not None:
        # A new method starts from its own defaults, not from another method's options.
        config.method = {"name": args.method}
    if args.labels_per_class is not None:
        overrides.append(f"method.labels_per_class={args.labels_per_class}")
    return config_module.apply_overrides(config, overrides + list(args.overrides))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(_values_not_flags(sys.argv[1:] if argv is None else argv))
    # argparse fills the positionals at their first run, so key=value after an option comes back here.
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from selfsup.data import DataError
    from selfsup.runs import RunExistsError
    from selfsup.train.checkpoint import CheckpointError, TrainingDiverged

    try:
        return _run(args)
    except RunExistsError as error:
        print(f"selfsup {args.command}: error: {error.run_dir} already holds a run; resume it with --resume {error.run_dir} "
              "or choose another --out", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ConfigError, DataError, CheckpointError) as error:
        # Bad input (config, data, a checkpoint) ends in one clear line.
        print(f"selfsup {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingDiverged as error:
        print(f"selfsup {args.command}: error: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"selfsup {args.command}: error: {error.strerror}: {error.filename or 'writing the run'}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        resume = "run the same command again to continue" if args.command == "shards" else "resume with --resume RUN_DIR"
        print(f"selfsup {args.command}: interrupted; {resume}", file=sys.stderr)
        return 130


def _load_run(run_dir: Path, modality: str, hint: str):
    """The run in ``run_dir``, which a command for ``modality`` runs needs."""
    from selfsup import runs

    run = runs.load_run(run_dir)
    found = run.method.modality
    if found != modality:
        raise ConfigError(f"{run_dir} is a{'n' if found == 'image' else ''} {found} run; {hint}")
    return run


def _run(args: argparse.Namespace) -> int:
    # Imported here so that `selfsup methods` and argument errors answer at once.
    from selfsup import runs
    from selfsup.methods import METHODS, method_class
    from selfsup.report import format_summary, format_table

    if args.command == "methods":
        rows = [[cls.modality, name, cls.summary] for modality in ("image", "text", "video")
                for name, cls in METHODS.items() if cls.modality == modality]
        print(format_table(["modality", "method", "description"], rows, left=(0, 1, 2)))
        return 0
    if args.command == "recipes":
        from selfsup.recipes import recipes

        print(format_table(["recipe", "version", "description"], [[r.name, r.version, r.description] for r in recipes().values()],
                           left=(0, 2)))
        return 0
    if args.command == "plan":
        from selfsup.plan import DEFAULT_UTILISATION, estimate, format_plan
        from selfsup.recipes import load_recipe

        config = config_module.apply_overrides(load_recipe(args.recipe), list(args.overrides))
        utilisation = DEFAULT_UTILISATION if args.utilisation is None else args.utilisation
        print(format_plan(estimate(config, args.gpus, args.gpu, args.images, args.epochs, utilisation)))
        return 0
    if args.command == "pretrain":
        if args.resume is not None:
            extra = [name for name in ("modality", "method", "data", "backbone", "batch_size", "seed", "labels_per_class", "out", "config",
                                       "recipe") if getattr(args, name)]
            if extra or args.overrides:
                raise ConfigError(f"--resume continues a run with its own config.yaml (only --epochs or --budget may lengthen it); "
                                  f"drop {', '.join('--' + e.replace('_', '-') for e in extra) or 'the overrides'}")
            longer = {key: value for key, value in (("epochs", args.epochs), ("budget", args.budget)) if value is not None}
            summary = runs.pretrain(Config(), resume_dir=args.resume, longer=longer)
        else:
            config = config_from_args(args)
            learns_from = method_class(config.method["name"]).modality
            if args.modality is not None and learns_from != args.modality:
                raise ConfigError(f"--modality {args.modality}: method {config.method['name']!r} learns from {learns_from}")
            summary = runs.pretrain(config)
        from selfsup import distributed

        if distributed.is_main_process():  # under torchrun, one table
            print(format_summary(summary))
            if summary.get("modality", "image") != "video" and summary.get("run_dir"):
                report = Path(summary["run_dir"]) / runs.REPORT_FILE
                print(f"\n{'report: ' + str(report) + '; ' if report.is_file() else ''}"
                      f"export the encoder: selfsup export {summary['run_dir']} --format onnx; "
                      f"curves and the embedding projector: tensorboard --logdir {Path(summary['run_dir']).parent}")
        # Stopped by SIGTERM or SIGINT after checkpointing: the conventional 128 + signal.
        return 128 + summary["stop_signal"] if summary.get("stopped_by") == "signal" else 0
    if args.command == "show":
        from selfsup.recipes import load_recipe

        config = load_recipe(args.recipe) if args.recipe else config_module.load(args.config) if args.config else Config()
        if args.method:
            config.method = {"name": args.method}
        config = config_module.apply_overrides(config, [f"data.source={args.source}", *args.overrides])
        count = args.count if args.count != 64 or not args.views else 16
        result = runs.show(config, args.out, count, args.views)
        print(format_table(["source", "images", "size", "views", "file"],
                           [[result["source"], result["images"], "x".join(map(str, result["size"])),
                             f"{result['views']} ({result['recipe']})" if args.views else "-", result["out"]]], left=(0, 4)))
        return 0
    if args.command == "shards":
        from selfsup.data.packing import format_byte_size, pack_shards, parse_byte_size

        try:
            max_size = None if args.max_size is None else parse_byte_size(args.max_size)
        except ConfigError as error:
            raise ConfigError(f"--max-size: {error}") from None
        result = pack_shards(args.source, args.out, max_count=args.max_count, max_size=max_size, size=args.size, workers=args.workers)
        if result["already_complete"]:
            print(f"{args.out} already holds the complete shards of {result['source']}; nothing to do")
        print(format_table(["shards", "samples", "skipped", "on disk", "seconds", "index"],
                           [[result["shards"], result["samples"], result["skipped"], format_byte_size(result["bytes"]),
                             f"{result['seconds']:.1f}", result["index"]]], left=(5,)))
        return 0
    if args.command == "runs":
        from selfsup.rundir import format_runs, list_runs, parse_where

        rows = list_runs(args.root, sort=args.sort, where=parse_where(args.where))
        if not rows:
            raise ConfigError(f"no run in {args.root} matches {' '.join(args.where)}" if args.where else f"{args.root} holds no run directories")
        print(format_runs(rows))
        return 0
    if args.command == "evaluate":
        print(format_summary(runs.evaluate_run(args.run_dir)))
        return 0
    if args.command == "reconstruct":
        from selfsup.modalities import image

        run = _load_run(args.run_dir, "image", "selfsup reconstruct takes masked-autoencoder image runs (method.name=mae)")
        result = image.reconstruct_to_file(run, args.out or args.run_dir / "reconstructions.png", args.count)
        print(format_table(["images", "source", "file"], [[result["images"], result["source"], result["out"]]]))
        return 0
    if args.command == "finetune":
        result = runs.finetune(args.run_dir, args.labels_per_class, args.epochs, args.seeds)
        frozen = result["frozen"]
        percent = [f"{value:.1%}" if value is not None else "-" for value in frozen.values()]
        print(format_table(["labels/class", "epochs", "fine-tuned", *[f"frozen {name}" for name in frozen]],
                           [[result["labels_per_class"], result["epochs"],
                             f"{result['top1']:.1%}" + (f" ± {result['std']:.1%}" if result["seeds"] > 1 else ""), *percent]]))
        return 0
    if args.command == "embed":
        if args.text:
            from selfsup.modalities import text

            run = _load_run(args.run_dir, "text", "--text needs a text run (e.g. --method mlm)")
            result = text.embed_texts(run, args.text, args.out, tokens=args.tokens)
            if args.out is None:
                import numpy as np

                print(np.array2string(result["features"], precision=4, threshold=64, edgeitems=4))
        else:
            from selfsup.modalities import image

            if args.out is None:
                raise ConfigError("selfsup embed --data needs --out FILE.npy")
            run = _load_run(args.run_dir, "image", 'embed texts with --text "..." (repeatable)')
            result = image.embed_to_file(run, args.data, args.out, args.batch_size)
        print(format_table(["rows", "dim", "skipped", "file"], [[result["rows"], result["dim"], result["skipped"], result["out"]]]))
        return 0
    if args.command == "fill-mask":
        from selfsup.modalities import text

        run = _load_run(args.run_dir, "text", "fill-mask needs a text run (e.g. --method mlm)")
        rows = []
        for position, candidates in text.fill_mask(run, args.text, args.top_k):
            rows += [[f"[MASK] {position + 1}", rank + 1, token, f"{probability:.3f}"] for rank, (token, probability) in enumerate(candidates)]
        print(format_table(["mask", "rank", "token", "probability"], rows))
        return 0
    if args.command == "similar-words":
        from selfsup.modalities import text

        run = _load_run(args.run_dir, "text", "similar-words needs a static text model (--method word2vec or glove)")
        rows = [[rank + 1, word, f"{cosine:.3f}"] for rank, (word, cosine) in enumerate(text.similar_words(run, args.word, args.top_k))]
        print(format_table(["rank", "word", "cosine"], rows))
        return 0
    if args.command == "report":
        default = args.run_dirs[0] / runs.REPORT_FILE if len(args.run_dirs) == 1 else Path(runs.REPORT_FILE)
        print(f"report: {runs.report_runs(args.run_dirs, args.out or default)}")
        return 0
    if args.command == "export":
        import torch

        from selfsup.export import export_run

        result = export_run(runs.load_run(args.run_dir, device=torch.device("cpu")), args.format, args.out, args.projector)
        print(format_table(["file", "format", "inputs", "output dim"],
                           [[result["file"], result["format"], result["inputs"], result["output_dim"]]], left=(0, 1, 2)))
        return 0
    if args.command == "neighbors":
        from selfsup.modalities import retrieval

        run = _load_run(args.run_dir, "image", "neighbors needs an image run")
        result = retrieval.neighbors(run, args.query, args.data, args.k, args.out, args.batch_size)
        rows = [[Path(query["query"]).name, neighbour["rank"], neighbour["name"], neighbour["label"] or "", f"{neighbour['similarity']:.3f}"]
                for query in result["queries"] for neighbour in query["neighbors"]]
        print(format_table(["query", "rank", "neighbour", "label", "similarity"], rows, left=(0, 2, 3)))
        print(f"grid: {result['out']}" + (f"; {result['skipped']} unreadable files skipped" if result["skipped"] else ""))
        return 0
    if args.command == "predict":
        from selfsup.modalities import video

        if args.samples < 1 or args.clips < 1:
            raise ConfigError(f"--samples and --clips must be at least 1, got {args.samples} and {args.clips}")
        run = _load_run(args.run_dir, "video", "predict needs a video run (e.g. --method lvp)")
        result = video.predict(run, args.samples, args.clips, args.seed, args.out)
        print(format_table(["clips", "samples", "best-of-K error", "diversity", "file"],
                           [[result["clips"], result["samples"], result["best_of_k"], result["sample_diversity"], result["out"]]]))
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
