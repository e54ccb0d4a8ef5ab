"""Shared pieces of the benchmark scripts: the machine, its measured peak, BENCHMARKS.md, the
summary table of image runs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import time
from pathlib import Path

import torch

from selfsup import config as config_module
from selfsup import runs
from selfsup.config import Config
from selfsup.methods import method_class

BENCHMARKS_FILE = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def machine() -> str:
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    else:
        cpu = platform.processor() or "cpu"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        device = f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return f"{device}; torch {torch.__version__}"


def peak_matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32, sizes: tuple[int, ...] = (1024, 2048),
                      seconds: float = 6.0) -> float:
    """Best sustained FLOP/s of a square matmul on ``device``, over a few sizes: the roofline
    the step is held to. (On the 2-core CPU one size alone is not enough: 2048 x 2048 has
    measured anywhere from 100 to 188 GFLOP/s from one run to the next, 1024 x 1024 a
    steady 187.)"""
    best = 0.0
    for size in sizes:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        deadline = time.perf_counter() + seconds / len(sizes)
        while time.perf_counter() < deadline:
            synchronize(device)
            start = time.perf_counter()
            for _ in range(4):
                a @ b
            synchronize(device)
            best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start))
    return best


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def update_section(name: str, body: str) -> None:
    """Replace the text between ``<!-- name -->`` and ``<!-- /name -->`` in BENCHMARKS.md."""
    text = BENCHMARKS_FILE.read_text() if BENCHMARKS_FILE.exists() else "# Benchmarks\n"
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_FILE.write_text(text)


def percent(value: float | None) -> str:
    """A fraction as a table cell in %, one decimal; "-" where there is none."""
    return "-" if value is None else f"{100 * value:.1f}"


def probe_cells(metrics: dict) -> list[str]:
    """kNN (k=20), linear, 1-, 10- and 100-shot cells of an evaluation's accuracy metrics ("-" where missing)."""
    fewshot = metrics.get("fewshot", {})
    return [percent(metrics.get("knn_top1")), percent(metrics.get("linear_top1")), *(percent(fewshot.get(k)) for k in ("1", "10", "100"))]


SUMMARY_HEADER = ["features", "kNN k=20", "kNN k=200", "linear", "1-shot", "10-shot", "100-shot", "energy AUC", "eff. rank",
                  "img/s", "steps"]


def summary_row(name: str, metrics: dict, summary: dict | None = None) -> list[str]:
    """A row of :data:`SUMMARY_HEADER`: the probes of ``metrics`` and, for a trained run, its
    diagnostics and pace from ``summary`` (a baseline's row leaves them "-")."""
    cells = probe_cells(metrics)
    cells = [name, cells[0], percent(metrics.get("knn200_top1")), *cells[1:]]
    if summary is None:
        return cells + ["-", "-", "-", "-"]
    collapse = summary["collapse"]
    return cells + [
        f"{summary['energy_auc']:.3f}" + (" (collapsed)" if collapse["collapsed"] else ""),
        f"{collapse['effective_rank']:.1f}",
        f"{summary['images_per_second']:,.0f}",
        f"{summary['steps']} ({summary['epochs']:.1f} ep)",
    ]


def run_label(run_dir: Path, settings: dict[str, object] | None = None) -> str:
    """The row name of a run: the method, for semi-supervised ones the labels it saw, and
    the ``settings`` that tell it from the other runs of its table."""
    options = config_module.load(run_dir / runs.CONFIG_FILE).method
    labels = options.get("labels_per_class")
    details = ([f"{labels} labels/class"] if labels else []) + [f"{key}={value}" for key, value in (settings or {}).items()]
    return options["name"] + (f" ({', '.join(details)})" if details else "")


def flat_config(run_dir: Path) -> dict[str, object]:
    """A run's resolved configuration as ``{"section.key": value}``."""
    flat: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = value

    walk("", dataclasses.asdict(config_module.load(run_dir / runs.CONFIG_FILE)))
    return flat


# Settings that differ between runs without making them an ablation: where a run was
# written, whether it measured the shared baselines, and the labels a semi-supervised
# run saw (its label says them already).
NOT_DISTINGUISHING = ("out", "eval.baselines", "method.labels_per_class")


def distinguishing_settings(run_dirs: list[Path]) -> list[dict[str, object]]:
    """Per run, the settings in which it differs from the first run of its method in the
    list (the ablation a table shows; :data:`NOT_DISTINGUISHING` aside). The first run of
    each method gets none."""
    configs = [flat_config(run_dir) for run_dir in run_dirs]
    firsts: dict[object, dict[str, object]] = {}
    settings: list[dict[str, object]] = []
    for config in configs:
        first = firsts.setdefault(config["method.name"], config)
        settings.append({key: value for key, value in config.items() if key not in NOT_DISTINGUISHING and first.get(key) != value})
    return settings


def summary_table(run_dirs: list[Path], reference: tuple[str, dict] | None = None) -> tuple[str, dict]:
    """The markdown table of finished image runs, with the baselines of the first run that
    measured them (and a published ``reference`` row of raw pixels, if given); also the first
    run's summary. Runs of one method are told apart by the settings that differ between them."""
    rows, baselines, first = [], None, None
    for run_dir, settings in zip(run_dirs, distinguishing_settings(run_dirs)):
        summary = json.loads((run_dir / runs.SUMMARY_FILE).read_text())
        first = first or summary
        rows.append(summary_row(run_label(run_dir, settings), summary, summary))
        baselines = baselines or summary.get("baselines")
    if baselines is None:
        raise SystemExit("none of the runs measured the baselines (eval.baselines=true)")
    rows.append(summary_row("raw pixels (measured here)", baselines["raw_pixels"]))
    if reference is not None:
        rows.append(summary_row(*reference))
    rows.append(summary_row(f"random init ({first['backbone']})", baselines["random_init"]))
    return markdown_table(SUMMARY_HEADER, rows), first


def pretrain_methods(names: list[str], source: str, budget: str, out: Path, overrides: list[str],
                     labels_per_class: list[int] | None = None) -> list[Path]:
    """Pretrain each method on ``source`` for ``budget`` (one run per value of
    ``labels_per_class`` for semi-supervised methods; None keeps the method's own), measuring
    the baselines in the first run only; returns the run directories."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dirs: list[Path] = []
    for name in names:
        semi_supervised = "labels_per_class" in method_class(name).option_defaults()
        for labels in labels_per_class if semi_supervised and labels_per_class else [None]:
            suffix = "" if labels is None else f"-{labels}-labels"
            run_dir = out / f"{name}{suffix}-{stamp}"
            config = config_module.apply_overrides(
                Config(),
                [f"method.name={name}", f"data.source={source}", f"train.budget={budget}", f"out={run_dir}", *overrides,
                 *([] if labels is None else [f"method.labels_per_class={labels}"]),
                 # The baselines do not depend on the method: measure them once.
                 *([] if not run_dirs else ["eval.baselines=false"])],
            )
            summary = runs.pretrain(config)
            print(json.dumps({k: summary[k] for k in ("method", "knn_top1", "linear_top1", "fewshot", "energy_auc")}))
            run_dirs.append(run_dir)
    return run_dirs


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def add_budget_run_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """The options every fixed-budget benchmark shares: the budget, where the runs go,
    tabulating finished runs instead of training (``--collect``), and config overrides."""
    parser.add_argument("--budget", default="15m", help="training wall-clock budget per run")
    parser.add_argument("--out", default=out, type=Path, help="parent folder of the runs")
    parser.add_argument("--collect", nargs="+", type=Path, metavar="RUN_DIR", help="tabulate finished runs instead of training")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
