"""Models of continuations on moving sprites after a fixed wall-clock training budget.

    python benchmarks/video.py --budget 15m [--model lvp,plain,gan,jepa | all] [key=value ...]
    python benchmarks/video.py [--section NAME] --collect RUN_DIR [RUN_DIR ...]

The four models of the latent-variable family, each pretrained for the same budget on the
same clips with its defaults (overrides apply to all):

- ``lvp``: the latent-variable predictor, z inferred by ISTA from the amortised guess;
- ``plain``: the same with ``z_dim=0``, the plain predictor of one (blurry) future;
- ``gan``: the same with ``conditioning=0``: x has no influence, the decoder is a
  generator of futures from z, trained against a discriminator (the GAN limit);
- ``jepa``: the future frames' embeddings predicted from the past's, EMA target, no decoder.

Tabulates, for each run: the energy AUC of the true continuation against another clip's,
the reversed and the shifted one; best-of-K error for K = 1, 5, 20 and the samples'
diversity; kNN / linear / few-shot accuracy of the encoder's features on the sprite class
beside raw pixels and random init; steps. The runs' ``predictions.png`` are copied to
``benchmarks/figures/video-<model>.png`` (``<section>-<model>.png`` with ``--section``) and
linked under the table in BENCHMARKS.md.

``--collect`` builds the table from finished run directories instead, so that the models
can be trained in separate processes (one per core) and shown together.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import add_budget_run_arguments, machine, markdown_table, percent, update_section

from selfsup import config as config_module
from selfsup import runs
from selfsup.config import Config
from selfsup.distributed import resolve_device
from selfsup.methods import method_class

MODELS = {
    "lvp": ["method.name=lvp"],
    "plain": ["method.name=lvp", "method.z_dim=0"],
    "gan": ["method.name=lvp", "method.conditioning=0.0"],
    "jepa": ["method.name=jepa"],
}
FIGURES = Path(__file__).resolve().parent / "figures"
HEADER = ["model", "AUC other clip", "AUC reversed", "AUC shifted", "best-of-1", "best-of-5", "best-of-20", "diversity",
          "kNN k=20", "linear", "10-shot", "steps (epochs)"]


def model_label(run_dir: Path) -> str:
    """The model and, for the latent-variable family, the options an ablation varies (the
    learning rate only where it is not the method's own)."""
    config = config_module.load(run_dir / runs.CONFIG_FILE)
    options = config.method
    lr = "" if config.train.lr == method_class(options["name"]).train_recipe["lr"] else f", lr {config.train.lr:g}"
    if options["name"] != "lvp":
        return options["name"] + (f" ({lr[2:]})" if lr else "")
    if options["z_dim"] == 0:
        return f"plain (lvp, z_dim=0{lr})"
    if options["conditioning"] == 0:
        return f"gan (lvp, conditioning=0{lr})"
    return (f"lvp ({options['regularizer']}, z_dim={options['z_dim']}, λ={options['regularizer_weight']:g}, "
            f"{options['inference_steps']} inference steps{lr})")


def row(name: str, metrics: dict, summary: dict | None = None) -> list[str]:
    aucs = (summary or {}).get("energy_auc_by_negative", {})
    best = (summary or {}).get("best_of_k", {})
    cells = [name, *(f"{aucs[k]:.3f}" if k in aucs else "-" for k in ("other_clip", "reversed", "shifted"))]
    cells += [f"{best[k]:.4f}" if k in best else "-" for k in ("1", "5", "20")]
    cells.append(f"{summary['sample_diversity']:.4f}" if summary and "sample_diversity" in summary else "-")
    cells += [percent(metrics.get("knn_top1")), percent(metrics.get("linear_top1")), percent(metrics.get("fewshot", {}).get("10"))]
    cells.append(f"{summary['steps']} ({summary['epochs']:.1f})" if summary else "-")
    return cells


def pretrain_all(names: list[str], budget: str, out: Path, overrides: list[str]) -> list[Path]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dirs = []
    for name in names:
        run_dir = out / f"{name}-{stamp}"
        config = config_module.apply_overrides(
            Config(), [*MODELS[name], "data.source=moving-sprites", f"train.budget={budget}", f"out={run_dir}", *overrides]
        )
        summary = runs.pretrain(config)
        print(json.dumps({k: summary.get(k) for k in ("method", "energy_auc_by_negative", "best_of_k", "knn_top1")}))
        run_dirs.append(run_dir)
    return run_dirs


def table(run_dirs: list[Path], figure_prefix: str | None = "video") -> tuple[str, list[str]]:
    """The markdown table of the runs (baselines from the first run that measured them) and
    the figure links (``<figure_prefix>-<model>[-<n>].png``; none without a prefix)."""
    rows, figures, baselines, names = [], [], None, set()
    for run_dir in run_dirs:
        summary = json.loads((run_dir / runs.SUMMARY_FILE).read_text())
        label = model_label(run_dir)
        rows.append(row(label, summary, summary))
        baselines = baselines or summary.get("baselines")
        if figure_prefix and summary.get("predictions"):
            FIGURES.mkdir(exist_ok=True)
            stem = f"{figure_prefix}-{label.split(' ')[0]}"
            name, n = stem, 1
            while name in names:  # several runs of one model (an ablation): -2, -3, ...
                n += 1
                name = f"{stem}-{n}"
            names.add(name)
            figure = FIGURES / f"{name}.png"
            shutil.copyfile(summary["predictions"], figure)
            figures.append(f"[{label}](benchmarks/figures/{figure.name})")
    for name, metrics in (baselines or {}).items():
        rows.append(row(name.replace("_", " ") + (" (last past frame)" if name == "raw_pixels" else ""), metrics))
    return markdown_table(HEADER, rows), figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all", help=f"comma-separated among {', '.join(MODELS)}, or 'all'")
    parser.add_argument("--section", help="BENCHMARKS.md section and figure-name prefix (default video-DEVICE-BUDGET, figures video-MODEL)")
    parser.add_argument("--no-figures", action="store_true", help="the table only (an ablation's many runs)")
    add_budget_run_arguments(parser, out="runs/benchmark-video")
    args = parser.parse_args()

    if args.collect:
        run_dirs = args.collect
        budget = config_module.load(run_dirs[0] / runs.CONFIG_FILE).train.budget
        options = (f"--section {args.section} " if args.section else "") + ("--no-figures " if args.no_figures else "")
        command = "python benchmarks/video.py " + options + "--collect " + " ".join(
            f"runs/{d.parent.name}/{d.name}" for d in run_dirs)
    else:
        names = list(MODELS) if args.model == "all" else args.model.split(",")
        unknown = [n for n in names if n not in MODELS]
        if unknown:
            raise SystemExit(f"unknown model {unknown[0]!r}; choose among {', '.join(MODELS)}")
        run_dirs = pretrain_all(names, args.budget, args.out, args.overrides)
        budget = args.budget
        command = f"python benchmarks/video.py --budget {args.budget} --model {args.model}" + "".join(f" {o}" for o in args.overrides)

    markdown, figures = table(run_dirs, None if args.no_figures else args.section or "video")
    config = config_module.load(run_dirs[0] / runs.CONFIG_FILE)
    video = config.video
    body = (
        f"Machine: {machine()}. Budget {budget} of training per model (evaluation excluded) on {video.clips} clips of "
        f"moving Fashion-MNIST sprites ({video.frames_in} frames in, {video.frames_out} out, {video.size} px, a new random "
        f"velocity with probability {video.change_p} per frame), evaluated on {video.test_clips} held-out clips of "
        f"held-out sprites. Energy AUC: P(F(x, true continuation) < F(x, wrong one)). Best-of-K: smallest per-pixel "
        f"squared error among K sampled futures; diversity: mean squared difference between two samples. Probes: "
        f"accuracy in % on the sprite class from the encoder's features of the past frames.\n\n{markdown}\n\n"
        + (f"Predicted futures (per clip: past and true future on top, one sampled future per row): {', '.join(figures) or '-'}\n\n"
           if not args.no_figures else "")
        + f"`{command}`"
    )
    print(markdown)
    if not args.no_write:
        device = resolve_device("auto").type
        update_section(args.section or f"video-{device}-{budget}", body)


if __name__ == "__main__":
    main()
