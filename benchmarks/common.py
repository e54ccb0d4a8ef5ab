"""Shared pieces of the benchmark scripts: the machine, its measured peak, BENCHMARKS.md."""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from pathlib import Path

import torch

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
    """kNN (k=20), linear, 1-, 10- and 100-shot cells of an evaluation's accuracy metrics."""
    fewshot = metrics["fewshot"]
    return [percent(metrics["knn_top1"]), percent(metrics["linear_top1"]), *(percent(fewshot[k]) for k in ("1", "10", "100"))]


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
