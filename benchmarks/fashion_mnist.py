"""The summary table on Fashion-MNIST after a fixed wall-clock training budget.

    python benchmarks/fashion_mnist.py --budget 15m [--method simclr | all] [key=value ...]

Each method is pretrained for the same budget with its default recipe (overrides apply to
every method), evaluated with the protocol of DESIGN.md, and shown beside raw pixels and the
same backbone at random initialisation, measured in the same run. The table goes into
BENCHMARKS.md under the device it ran on.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from common import machine, markdown_table, update_section
from selfsup import config as config_module
from selfsup import runs
from selfsup.config import Config
from selfsup.data import fashion_mnist_available
from selfsup.methods import METHODS

# Methods that exist to be flagged (collapse examples), not to be picked.
DIAGNOSTIC_METHODS = ("siamese-naive",)


def percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def row(name: str, metrics: dict, summary: dict | None = None) -> list[str]:
    fewshot = metrics.get("fewshot", {})
    cells = [name, percent(metrics.get("knn_top1")), percent(metrics.get("knn200_top1")), percent(metrics.get("linear_top1"))]
    cells += [percent(fewshot.get(k)) for k in ("1", "10", "100")]
    if summary is None:
        return cells + ["-", "-", "-", "-"]
    collapse = summary["collapse"]
    return cells + [
        f"{summary['energy_auc']:.3f}",
        f"{collapse['effective_rank']:.1f}",
        f"{summary['images_per_second']:,.0f}",
        f"{summary['steps']} ({summary['epochs']:.1f} ep)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="15m", help="training wall-clock budget per method")
    parser.add_argument("--method", default="simclr", help="a method, a comma-separated list, or 'all'")
    parser.add_argument("--out", default="runs/benchmark-fashion-mnist", help="parent folder of the runs")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    if not fashion_mnist_available():
        raise SystemExit("Fashion-MNIST is not installed: apt-get install -y dataset-fashion-mnist")

    names = [m for m in METHODS if m not in DIAGNOSTIC_METHODS] if args.method == "all" else args.method.split(",")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows, baselines, summaries = [], None, {}
    for name in names:
        config = config_module.apply_overrides(
            Config(),
            [f"method.name={name}", "data.source=fashion-mnist", f"train.budget={args.budget}",
             f"out={Path(args.out) / f'{name}-{stamp}'}", *args.overrides,
             # The baselines do not depend on the method: measure them once.
             *([] if baselines is None else ["eval.baselines=false"])],
        )
        summary = runs.pretrain(config)
        summaries[name] = summary
        print(json.dumps({k: summary[k] for k in ("method", "knn_top1", "linear_top1", "fewshot", "energy_auc")}))
        rows.append(row(name, summary, summary))
        baselines = baselines or summary.get("baselines")

    reference = {"knn_top1": 0.846, "linear_top1": 0.844, "fewshot": {"1": 0.499, "10": 0.701, "100": 0.791}}
    rows.append(row("raw pixels (measured here)", baselines["raw_pixels"]))
    rows.append(row("raw pixels (DESIGN.md reference)", reference))
    rows.append(row(f"random init ({summaries[names[0]]['backbone']})", baselines["random_init"]))
    header = ["features", "kNN k=20", "kNN k=200", "linear", "1-shot", "10-shot", "100-shot", "energy AUC", "eff. rank", "img/s", "steps"]
    table = markdown_table(header, rows)
    first = summaries[names[0]]
    command = f"python benchmarks/fashion_mnist.py --budget {args.budget} --method {args.method}" + "".join(f" {o}" for o in args.overrides)
    body = (
        f"Machine: {machine()}. Budget {args.budget} of training per method (evaluation excluded), "
        f"backbone `{first['backbone']}`, accuracies in % on the 10,000 test images "
        f"(few-shot: mean over {config.eval.fewshot_seeds} seeds).\n\n{table}\n\n`{command}`"
    )
    print(table)
    if not args.no_write:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        update_section(f"fashion-mnist-{device}-{args.method}-{args.budget}", body)


if __name__ == "__main__":
    main()
