"""The summary table on a real RGB collection: the Open Clip Art Library's drawings.

    apt-get install -y openclipart-png
    python benchmarks/rgb.py --budget 15m [--method simclr] [--data FOLDER] [key=value ...]
    python benchmarks/rgb.py --collect RUN_DIR [RUN_DIR ...]

The collection is Debian's ``openclipart-png``: about 8,300 colour drawings (PNG, most with a
transparent background) filed by their authors in first-level folders (computer, shapes,
signs and symbols, recreation, people, transportation, food, animals, ...: 22 of them, 3 to
2,158 images each). selfsup reads it as any folder of images: first-level folder names are
labels used only for evaluation, 20% of the files (by the hash of their path) are the test
split, the stored size and channels are chosen from the files. Each run is the plain
``selfsup pretrain FOLDER --budget B`` with the method's default recipe (overrides apply),
shown beside raw pixels and the same backbone at random initialisation measured in the first
run. ``--collect`` tabulates finished runs (e.g. one per core).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import add_budget_run_arguments, machine, pretrain_methods, summary_table, update_section

from selfsup import config as config_module
from selfsup import runs
from selfsup.distributed import resolve_device

OPENCLIPART = Path("/usr/share/openclipart/png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="simclr", help="a method or a comma-separated list")
    parser.add_argument("--data", type=Path, default=OPENCLIPART, help="the folder of images (default: openclipart-png's)")
    parser.add_argument("--section", help="BENCHMARKS.md section name (default from the device, methods and budget)")
    add_budget_run_arguments(parser, out="runs/benchmark-rgb")
    args = parser.parse_args()

    if args.collect:
        run_dirs = args.collect
        budget = config_module.load(run_dirs[0] / runs.CONFIG_FILE).train.budget
        command = "python benchmarks/rgb.py --collect " + " ".join(str(d) for d in run_dirs)
        method = "all"
    else:
        if not args.data.is_dir():
            raise SystemExit(f"{args.data} is not a folder (the default is openclipart-png's: apt-get install -y openclipart-png)")
        run_dirs = pretrain_methods(args.method.split(","), str(args.data), args.budget, args.out, args.overrides)
        budget, method = args.budget, args.method
        data = "" if args.data == OPENCLIPART else f" --data {args.data}"
        command = f"python benchmarks/rgb.py --budget {args.budget} --method {args.method}{data}" + "".join(f" {o}" for o in args.overrides)

    markdown, first = summary_table(run_dirs)
    config = config_module.load(run_dirs[0] / runs.CONFIG_FILE)
    body = (
        f"Machine: {machine()}. Data `{config.data.source}` stored at {config.data.size} px x {config.data.channels} "
        f"channel(s); budget {budget} of training per method (evaluation excluded), backbone `{first['backbone']}`, "
        f"global crops of {config.augment.global_size} px read at {config.augment.eval_size} px; accuracies in % on the "
        f"test split (a fifth of the files, by the hash of their path; few-shot: mean over "
        f"{config.eval.fewshot_seeds} seeds; a class with fewer images than the shots gives all it has)."
        f"\n\n{markdown}\n\n`{command}`"
    )
    print(markdown)
    if not args.no_write:
        device = resolve_device("auto").type
        update_section(args.section or f"rgb-openclipart-{device}-{method}-{budget}", body)


if __name__ == "__main__":
    main()
