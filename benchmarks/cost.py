"""What a plain `selfsup pretrain --budget B` costs end to end, in each modality, against the
allowance 1.3 x B + 60 s (training, evaluation, baselines, report and all).

    python benchmarks/cost.py [--budget 60s] [--modality image,text,video] [--out DIR] [--section NAME] [--no-write]
    python benchmarks/cost.py --collect DIR/cost.jsonl [...]

Each modality runs the plain command (its default method and data) twice in a fresh cache
folder (``$SELFSUP_CACHE``): the first run measures the baselines (raw pixels, random init,
mean word2vec) and keeps them, the second reads them back, as every later run on the same
data does. Each command is timed from start to exit as a subprocess; the summary's
``evaluation_seconds`` splits the time. Results go to ``DIR/cost.jsonl`` too, so that
modalities timed in separate processes (one per core: ``taskset -c N``) can be tabulated
together with ``--collect``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, markdown_table, update_section

from selfsup.config import parse_budget

MODALITIES = ("image", "text", "video")
HEADER = ["modality", "cache", "end to end (s)", "training (s)", "evaluation (s)", "allowance (s)", "within"]


def time_command(modality: str, budget: str, run_dir: Path, cache: Path) -> dict:
    command = ["selfsup", "pretrain", "--modality", modality, "--budget", budget, "--out", str(run_dir)]
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "SELFSUP_CACHE": str(cache)})
    seconds = time.perf_counter() - started
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"modality": modality, "budget": budget, "seconds": round(seconds, 1), "training_seconds": summary["seconds"],
            "evaluation_seconds": summary["evaluation_seconds"], "command": " ".join(command[:-2])}


def row(result: dict, cache: str) -> list[str]:
    allowance = 1.3 * parse_budget(result["budget"]) + 60
    return [result["modality"], cache, f"{result['seconds']:.0f}", f"{result['training_seconds']:.0f}",
            f"{result['evaluation_seconds']:.0f}", f"{allowance:.0f}", "yes" if result["seconds"] <= allowance else "no"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="60s")
    parser.add_argument("--modality", default=",".join(MODALITIES), help="comma-separated")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark-cost"), help="parent folder of the runs")
    parser.add_argument("--collect", nargs="+", type=Path, metavar="JSONL", help="tabulate earlier results instead")
    parser.add_argument("--section", help="BENCHMARKS.md section (default cost-BUDGET)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    if args.collect:
        results = [json.loads(line) for path in args.collect for line in path.read_text().splitlines() if line.strip()]
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        results = []
        for modality in args.modality.split(","):
            cache = Path(tempfile.mkdtemp(prefix="selfsup-cost-cache-"))
            for when in ("cold", "warm"):
                result = time_command(modality, args.budget, args.out / f"{modality}-{when}-{stamp}", cache)
                result["cache"] = when
                results.append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)
                args.out.mkdir(parents=True, exist_ok=True)
                with open(args.out / "cost.jsonl", "a") as log:
                    log.write(json.dumps(result) + "\n")
    order = {m: i for i, m in enumerate(MODALITIES)}
    results.sort(key=lambda r: (order.get(r["modality"], 9), r["cache"] != "cold"))
    markdown = markdown_table(HEADER, [row(r, {"cold": "measured and kept", "warm": "read back"}[r["cache"]]) for r in results])
    print(markdown)
    budget = results[0]["budget"] if results else args.budget
    command = ("python benchmarks/cost.py --collect " + " ".join(str(p) for p in args.collect) if args.collect
               else f"python benchmarks/cost.py --budget {budget} --modality {args.modality}")
    body = (
        f"Machine: {machine()}. `selfsup pretrain --modality M --budget {budget}` (each modality's default method and "
        f"data), timed from start to exit, twice in a fresh cache folder: the first run measures the baselines and "
        f"keeps them, the second reads them back. Allowance: 1.3 x budget + 60 s.\n\n{markdown}\n\n"
        f"`{command}`"
    )
    if not args.no_write:
        update_section(args.section or f"cost-{budget}", body)


if __name__ == "__main__":
    main()
