"""Crop and evaluation sizes: which global crop side to train on and which side to read whole
images at, for the default recipe on Fashion-MNIST after a fixed budget.

    python benchmarks/resolution.py --budget 15m [--crops 16,28] [--eval-sizes 16,20,24,28] [key=value ...]
    python benchmarks/resolution.py --collect RUN_DIR [RUN_DIR ...] [--eval-sizes 16,20,24,28]

One run per crop side (``augment.global_size``), trained without evaluation; each is then read
at every evaluation side (``augment.eval_size``) with the frozen probes of DESIGN.md (kNN,
linear, few-shot), so that one table shows both choices. Smaller crops make each step cheaper,
so a budget holds more epochs; a random resized crop shows objects larger than the whole image
does at the same side, so an encoder may read whole images best above its crop side (FixRes).
Run one process per core (``taskset -c N``) and ``--collect`` the runs to train two crop sides
at once.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import add_budget_run_arguments, machine, markdown_table, probe_cells, update_section

from selfsup import config as config_module
from selfsup import runs
from selfsup.augment import ViewMaker
from selfsup.backbones import uses_convolutions
from selfsup.config import Config
from selfsup.data.base import labelled_subset
from selfsup.evaluate.pipeline import encode
from selfsup.evaluate.protocol import split_accuracy_metrics
from selfsup.modalities import modality_of

HEADER = ["crops", "read at", "kNN k=20", "linear", "1-shot", "10-shot", "100-shot", "steps"]


def train_one(crop: int, budget: str, out: Path, overrides: list[str]) -> Path:
    run_dir = out / f"crops-{crop}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = config_module.apply_overrides(Config(), [
        f"augment.global_size={crop}", f"train.budget={budget}", "eval.enabled=false", f"out={run_dir}", *overrides])
    runs.pretrain(config)
    return run_dir


def rows_of(run_dir: Path, eval_sizes: list[int]) -> list[list[str]]:
    """The run read at each evaluation side: one table row per side."""
    run = runs.load_run(run_dir)
    modality = modality_of(run.config)
    _, train, test = modality.load_data(run.config, run_dir)
    train, test = labelled_subset(train), labelled_subset(test)
    trained = modality.build_view_maker(run.config)
    method = run.method.eval()
    channels_last = uses_convolutions(method)
    crop, steps = run.config.augment.global_size, run.state["step"]
    rows = []
    for size in eval_sizes:
        view_maker = ViewMaker(trained.recipe, trained.mean, trained.std, eval_size=size)
        train_x = encode(method.embed, train.images, view_maker, run.device, channels_last)
        test_x = encode(method.embed, test.images, view_maker, run.device, channels_last)
        metrics = split_accuracy_metrics(train_x, train, test_x, test, run.config.eval.fewshot_seeds)
        rows.append([f"{crop} px", f"{size} px", *probe_cells(metrics), str(steps)])
        print(" | ".join(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", default="16,28", help="global crop sides to train on (comma-separated)")
    parser.add_argument("--eval-sizes", default="16,20,24,28", help="sides to read whole images at (comma-separated)")
    add_budget_run_arguments(parser, out="runs/benchmark-resolution")
    args = parser.parse_args()
    eval_sizes = [int(size) for size in args.eval_sizes.split(",")]
    if args.collect:
        run_dirs = args.collect
        budget = config_module.load(run_dirs[0] / runs.CONFIG_FILE).train.budget
        command = "python benchmarks/resolution.py --collect " + " ".join(str(d) for d in run_dirs)
    else:
        run_dirs = [train_one(int(crop), args.budget, args.out, args.overrides) for crop in args.crops.split(",")]
        budget = args.budget
        command = f"python benchmarks/resolution.py --budget {budget} --crops {args.crops}"
    command += f" --eval-sizes {args.eval_sizes}"
    markdown = markdown_table(HEADER, [row for run_dir in run_dirs for row in rows_of(run_dir, eval_sizes)])
    config = config_module.load(run_dirs[0] / runs.CONFIG_FILE)
    body = (f"Machine: {machine()}. {budget} of training per crop side, `{config.method['name']}` on "
            f"`{config.backbone.name}`, {config.data.source} stored at {config.data.size} px, otherwise the defaults; "
            f"accuracies in % on the 10,000 test images (few-shot: mean over {config.eval.fewshot_seeds} draws).\n\n"
            f"{markdown}\n\n`{command}`")
    print(markdown)
    if not args.no_write:
        update_section(f"resolution-{budget}", body)


if __name__ == "__main__":
    main()
