"""The summary table on Fashion-MNIST after a fixed wall-clock training budget.

    python benchmarks/fashion_mnist.py --budget 15m [--method simclr | paws | all] [key=value ...]
    python benchmarks/fashion_mnist.py --collect RUN_DIR [RUN_DIR ...]
    python benchmarks/fashion_mnist.py --curve [--budgets 2m,5m,15m,45m] [--part ssl | supervised] [key=value ...]
    python benchmarks/fashion_mnist.py --curve --collect RUN_DIR_OR_JSON [...]

Each method is pretrained for the same budget with its default recipe (overrides apply to
every method), evaluated with the protocol of DESIGN.md, and shown beside raw pixels and the
same backbone at random initialisation, measured in the same run. PAWS, the semi-supervised
method, gets one run and one row per number of labels per class (``--labels-per-class``).
The table goes into BENCHMARKS.md under the device it ran on.

``--collect`` builds the table from finished run directories instead, so that methods can be
trained in separate processes (one per core or per machine) and shown together.

``--curve`` is the learning curve: the default recipe (the plain ``selfsup pretrain``, with
any overrides) trained for each budget, and beside each the same backbone trained with every
label for the same budget (:func:`selfsup.runs.supervised_reference`), so that the table says
what share of supervised accuracy self-supervision reaches at each budget. ``--part`` trains
one half (the self-supervised runs, or the supervised ones, written as JSON files) so that
the halves can run on two cores; ``--curve --collect`` tabulates both.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import (
    add_budget_run_arguments,
    machine,
    markdown_table,
    percent,
    pretrain_methods,
    probe_cells,
    summary_table,
    update_section,
)

from selfsup import config as config_module
from selfsup import runs
from selfsup.config import Config, parse_budget
from selfsup.data import fashion_mnist_available
from selfsup.distributed import resolve_device
from selfsup.methods import METHODS

# Methods that exist to be flagged (collapse examples), not to be picked.
DIAGNOSTIC_METHODS = ("siamese-naive",)
RAW_PIXELS_REFERENCE = {"knn_top1": 0.846, "linear_top1": 0.844, "fewshot": {"1": 0.499, "10": 0.701, "100": 0.791}}
CURVE_HEADER = ["budget", "kNN k=20", "linear", "1-shot", "10-shot", "100-shot", "supervised", "linear / supervised",
                "self-supervised steps", "supervised steps"]


def curve_config(budget: str, overrides: list[str], *extra: str) -> Config:
    return config_module.apply_overrides(Config(), ["data.source=fashion-mnist", f"train.budget={budget}", *overrides, *extra])


def curve_runs(budgets: list[str], part: str | None, out: Path, overrides: list[str]) -> list[Path]:
    """For each budget, the default recipe's run directory and/or the supervised reference's JSON file."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths: list[Path] = []
    for budget in budgets:
        if part in (None, "ssl"):
            run_dir = out / f"curve-{budget}-{stamp}"
            summary = runs.pretrain(curve_config(budget, overrides, f"out={run_dir}"))
            print(json.dumps({k: summary[k] for k in ("knn_top1", "linear_top1", "fewshot", "steps")}))
            paths.append(run_dir)
        if part in (None, "supervised"):
            result = runs.supervised_reference(curve_config(budget, overrides))
            print(json.dumps(result))
            path = out / f"supervised-{budget}-{stamp}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2))
            paths.append(path)
    return paths


def curve_table(paths: list[Path]) -> tuple[str, dict]:
    """One row per budget: the self-supervised run's probes, the supervised reference, their ratio."""
    by_budget: dict[float, dict] = {}
    baselines = None
    for path in paths:
        if path.suffix == ".json":
            result = json.loads(path.read_text())
            by_budget.setdefault(parse_budget(result["budget"]), {})["supervised"] = result
        else:
            summary = json.loads((path / runs.SUMMARY_FILE).read_text())
            budget = config_module.load(path / runs.CONFIG_FILE).train.budget
            by_budget.setdefault(parse_budget(budget), {}).update(ssl=summary, budget=budget)
            baselines = baselines or summary.get("baselines")
    rows = []
    for seconds in sorted(by_budget):
        ssl, supervised = by_budget[seconds].get("ssl", {}), by_budget[seconds].get("supervised")
        budget = by_budget[seconds].get("budget") or supervised["budget"]
        top1 = supervised["top1"] if supervised else None
        ratio = f"{ssl['linear_top1'] / top1:.2f}" if ssl and top1 else "-"
        steps = f"{ssl['steps']} ({ssl['epochs']:.1f} ep)" if ssl else "-"
        supervised_steps = f"{supervised['steps']} ({supervised['epochs']:.1f} ep)" if supervised else "-"
        rows.append([budget, *probe_cells(ssl), percent(top1), ratio, steps, supervised_steps])
    for name, metrics in (baselines or {}).items():
        rows.append([name.replace("_", " "), *probe_cells(metrics), "-", "-", "-", "-"])
    return markdown_table(CURVE_HEADER, rows), by_budget


def curve(args: argparse.Namespace) -> None:
    if args.collect:
        paths = args.collect
        command = "python benchmarks/fashion_mnist.py --curve --collect " + " ".join(str(p) for p in paths)
    else:
        if not fashion_mnist_available():
            raise SystemExit("Fashion-MNIST is not installed: apt-get install -y dataset-fashion-mnist")
        paths = curve_runs(args.budgets.split(","), args.part, args.out, args.overrides)
        command = f"python benchmarks/fashion_mnist.py --curve --budgets {args.budgets}" + "".join(f" {o}" for o in args.overrides)
    markdown, by_budget = curve_table(paths)
    print(markdown)
    ssl = next((entry["ssl"] for entry in by_budget.values() if "ssl" in entry), None)
    supervised = next((entry["supervised"] for entry in by_budget.values() if "supervised" in entry), None)
    labels = f"{supervised['train_images']:,}" if supervised else "-"
    body = (
        f"Machine: {machine()}. Each budget is wall-clock training time (evaluation excluded). Self-supervised: "
        f"the plain `selfsup pretrain --budget B` ({ssl['method'] if ssl else '-'}, `{ssl['backbone'] if ssl else '-'}`), "
        f"frozen probes as in DESIGN.md. Supervised: the same backbone from the same initialisation trained with all "
        f"{labels} labels for the same budget (AdamW, crop-and-flip views at "
        f"{supervised['eval_size'] if supervised else '-'} px, `selfsup.runs.supervised_reference`), top-1 of its own "
        f"head on the 10,000 test images. Accuracies in %.\n\n{markdown}\n\n`{command}`"
    )
    if not args.no_write and not args.part:
        update_section(args.section or "fashion-mnist-curve", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="simclr", help="a method, a comma-separated list, or 'all'")
    parser.add_argument("--labels-per-class", default="1,10,100", help="PAWS: one run per value (comma-separated)")
    parser.add_argument("--section", help="BENCHMARKS.md section name (default from the device, methods and budget)")
    parser.add_argument("--curve", action="store_true", help="the learning curve of the default recipe beside supervised training")
    parser.add_argument("--budgets", default="2m,5m,15m,45m", help="with --curve: the budgets (comma-separated)")
    parser.add_argument("--part", choices=("ssl", "supervised"), help="with --curve: train one half only (e.g. one per core)")
    add_budget_run_arguments(parser, out="runs/benchmark-fashion-mnist")
    args = parser.parse_args()
    if args.curve:
        curve(args)
        return

    if args.collect:
        run_dirs = args.collect
        budget = config_module.load(run_dirs[0] / runs.CONFIG_FILE).train.budget
        command = "python benchmarks/fashion_mnist.py --collect " + " ".join(str(d) for d in run_dirs)
        method = "all"
    else:
        if not fashion_mnist_available():
            raise SystemExit("Fashion-MNIST is not installed: apt-get install -y dataset-fashion-mnist")
        names = (
            [m for m, cls in METHODS.items() if cls.modality == "image" and m not in DIAGNOSTIC_METHODS]
            if args.method == "all" else args.method.split(",")
        )
        labels = [int(n) for n in args.labels_per_class.split(",")]
        run_dirs = pretrain_methods(names, "fashion-mnist", args.budget, args.out, args.overrides, labels)
        budget, method = args.budget, args.method
        command = f"python benchmarks/fashion_mnist.py --budget {args.budget} --method {args.method}" + "".join(f" {o}" for o in args.overrides)

    markdown, first = summary_table(run_dirs, reference=("raw pixels (DESIGN.md reference)", RAW_PIXELS_REFERENCE))
    config = config_module.load(run_dirs[0] / runs.CONFIG_FILE)
    body = (
        f"Machine: {machine()}. Budget {budget} of training per method (evaluation excluded), "
        f"backbone `{first['backbone']}`, global crops of {config.augment.global_size} px, accuracies in % on the "
        f"10,000 test images (few-shot: mean over {config.eval.fewshot_seeds} seeds).\n\n{markdown}\n\n`{command}`"
    )
    print(markdown)
    if not args.no_write:
        device = resolve_device("auto").type
        update_section(args.section or f"fashion-mnist-{device}-{method}-{budget}", body)


if __name__ == "__main__":
    main()
