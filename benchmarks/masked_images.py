"""Predicting hidden parts of images: MAE (pixels) against I-JEPA and LeJEPA (embeddings),
beside DINO and SimCLR, all on the same small-stem ViT-Tiny, Fashion-MNIST, a fixed budget.

    python benchmarks/masked_images.py --budget 15m [--method mae,ijepa,lejepa,dino,simclr] [key=value ...]
    python benchmarks/masked_images.py --collect RUN_DIR [RUN_DIR ...]

Train one method per process and pin each to a core (``taskset -c N``) to run two at once,
then ``--collect`` the runs into one table. Fashion-MNIST is packed once into tar shards and
streamed, so that evaluation reads the stated labelled subsets (``eval.streamed_train``,
``eval.streamed_test``: 10,000 and 2,000 images) rather than all 70,000 images through a
ViT on one core. Columns: the frozen-feature probes (kNN, linear, 1/10/100-shot), end-to-end
fine-tuning on 10 labels per class (``selfsup finetune``), and the energy AUC of the true
hidden part (or second view) against one from another image; MAE's reconstructions go to
``benchmarks/figures/``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import add_budget_run_arguments, machine, markdown_table, percent, update_section

from selfsup import config as config_module
from selfsup import runs
from selfsup.config import Config
from selfsup.data import fashion_mnist_available
from selfsup.data.packing import pack_shards

METHODS = ("mae", "ijepa", "lejepa", "dino", "simclr")
BACKBONE = "vit-tiny-small"
FINETUNE_LABELS, FINETUNE_EPOCHS = 10, 50
SHARDS = Path("runs/fashion-mnist-shards")
FIGURES = Path(__file__).resolve().parent / "figures"
HEADER = ["method", "kNN k=20", "linear", "1-shot", "10-shot", "100-shot", f"fine-tuned ({FINETUNE_LABELS}/class)", "energy AUC",
          "steps"]


def row(name: str, metrics: dict, summary: dict | None = None) -> list[str]:
    fewshot = metrics.get("fewshot", {})
    cells = [name, percent(metrics.get("knn_top1")), percent(metrics.get("linear_top1"))]
    cells += [percent(fewshot.get(k)) for k in ("1", "10", "100")]
    if summary is None:
        return cells + ["-", "-", "-"]
    tuned = summary.get("finetune", {}).get(str(FINETUNE_LABELS), {}).get("top1")
    collapsed = " (collapsed)" if summary["collapse"]["collapsed"] else ""
    return cells + [percent(tuned), f"{summary['energy_auc']:.3f}{collapsed}", f"{summary['steps']} ({summary['epochs']:.2f} ep)"]


def train_one(name: str, budget: str, out: Path, overrides: list[str]) -> Path:
    run_dir = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = config_module.apply_overrides(Config(), [
        f"method.name={name}", f"data.source={SHARDS}", "data.stream=always", f"backbone.name={BACKBONE}",
        # Every method sees whole 28 px images (small-images, SimCLR's recipe, would crop 16 px).
        "augment.global_size=28", f"train.budget={budget}", "eval.report=false", "eval.projector=0", f"out={run_dir}", *overrides])
    summary = runs.pretrain(config)
    runs.finetune(run_dir, FINETUNE_LABELS, FINETUNE_EPOCHS)
    if name == "mae":
        from selfsup.modalities.image import reconstruct_to_file

        reconstruct_to_file(runs.load_run(run_dir), FIGURES / "mae-reconstructions.png")
    print(json.dumps({k: summary[k] for k in ("method", "knn_top1", "linear_top1", "fewshot", "energy_auc")}))
    return run_dir


def table(run_dirs: list[Path]) -> str:
    rows, baselines = [], None
    for run_dir in run_dirs:
        summary = json.loads((run_dir / runs.SUMMARY_FILE).read_text())
        rows.append(row(summary["method"], summary, summary))
        baselines = baselines or summary.get("baselines")
    if baselines:
        rows.append(row("raw pixels", baselines["raw_pixels"]))
        rows.append(row(f"random init ({BACKBONE})", baselines["random_init"]))
    return markdown_table(HEADER, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default=",".join(METHODS), help="comma-separated methods, each trained in turn")
    add_budget_run_arguments(parser, out="runs/benchmark-masked-images")
    args = parser.parse_args()
    if args.collect:
        run_dirs, budget = args.collect, config_module.load(args.collect[0] / runs.CONFIG_FILE).train.budget
        command = "python benchmarks/masked_images.py --collect " + " ".join(f"runs/{d.parent.name}/{d.name}" for d in run_dirs)
    else:
        if not fashion_mnist_available():
            raise SystemExit("Fashion-MNIST is not installed: apt-get install -y dataset-fashion-mnist")
        pack_shards("fashion-mnist", SHARDS, workers=1)
        names = args.method.split(",")
        # The baselines (raw pixels, random init) do not depend on the method: the first run measures them.
        run_dirs = [train_one(name, args.budget, args.out, args.overrides + ([] if i == 0 else ["eval.baselines=false"]))
                    for i, name in enumerate(names)]
        budget = args.budget
        command = f"python benchmarks/masked_images.py --budget {budget} --method {args.method}"
    markdown = table(run_dirs)
    body = (f"Machine: {machine()}. {budget} of training per method, `{BACKBONE}` (ViT-Tiny, 4 px patches) on Fashion-MNIST "
            f"at 28 px, streamed from shards; probes on 10,000 labelled training images and 2,000 test images (few-shot: mean "
            f"over 5 draws); fine-tuned: end to end on {FINETUNE_LABELS} labels per class, {FINETUNE_EPOCHS} epochs. MAE's "
            f"reconstructions: `benchmarks/figures/mae-reconstructions.png`.\n\n{markdown}\n\n`{command}`")
    print(markdown)
    if not args.no_write:
        update_section(f"masked-images-{budget}", body)


if __name__ == "__main__":
    main()
