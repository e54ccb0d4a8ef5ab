"""How a convnet's last feature map becomes the features the probes read: one mean over the
whole map (``backbone.pool=mean``, [B, C]) or the mean of each cell of a 2 x 2 grid
(``backbone.pool=grid``, [B, 4C]), for finished runs and for the same backbone at random
initialisation, beside raw pixels.

    python benchmarks/readout.py RUN_DIR [RUN_DIR ...] [--pools mean,grid] [--no-write]

Pooling has no weights, so one trained encoder is read both ways: the run's backbone is built
again with each pooling and given the run's weights. Each run is read at its own evaluation
side (``augment.eval_size``) with the frozen probes of DESIGN.md; the random-init rows use
the first run's configuration and seed (what its baselines measure).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import machine, markdown_table, probe_cells, update_section

from selfsup import runs
from selfsup.backbones import build_backbone
from selfsup.data.base import labelled_subset
from selfsup.evaluate.pipeline import encode
from selfsup.evaluate.protocol import raw_pixel_features, split_accuracy_metrics
from selfsup.modalities import modality_of

HEADER = ["encoder", "pool", "dim", "kNN k=20", "linear", "1-shot", "10-shot", "100-shot"]


def read_with(backbone: torch.nn.Module, pool: str, config, train, test, view_maker, device: torch.device) -> list[str]:
    """``backbone``'s weights in a backbone of the same configuration pooled by ``pool``, probed."""
    pooled, dim = build_backbone(config.backbone.name, config.data.channels, config.backbone.width, config.data.size, pool)
    pooled.load_state_dict(backbone.state_dict())
    pooled.to(device).eval().to(memory_format=torch.channels_last)
    train_x = encode(pooled, train.images, view_maker, device, channels_last=True)
    test_x = encode(pooled, test.images, view_maker, device, channels_last=True)
    return [pool, str(dim), *probe_cells(split_accuracy_metrics(train_x, train, test_x, test, config.eval.fewshot_seeds))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--pools", default="mean,grid", help="poolings to read each encoder with (comma-separated)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    pools = args.pools.split(",")

    rows = []
    first = runs.load_run(args.runs[0])
    modality = modality_of(first.config)
    _, train, test = modality.load_data(first.config, args.runs[0])
    train, test = labelled_subset(train), labelled_subset(test)
    encoders = []
    for run_dir in args.runs:
        run = first if run_dir == args.runs[0] else runs.load_run(run_dir)
        trained = f"trained with {run.config.backbone.pool or 'mean'}, {run.state['step']} steps"
        encoders.append((f"{run_dir.name} ({trained})", run.config, run.method.backbone))
    encoders.append(("random init", first.config, runs.build_model(first.config).backbone))
    for name, config, backbone in encoders:
        view_maker = modality.build_view_maker(config)
        for pool in pools:
            rows.append([name, *read_with(backbone, pool, config, train, test, view_maker, first.device)])
            print(" | ".join(rows[-1]), flush=True)
    pixels = split_accuracy_metrics(raw_pixel_features(train.images), train, raw_pixel_features(test.images), test,
                                    first.config.eval.fewshot_seeds)
    rows.append(["raw pixels", "-", str(train.images[0].numel()), *probe_cells(pixels)])

    markdown = markdown_table(HEADER, rows)
    config = first.config
    command = f"python benchmarks/readout.py {' '.join(str(d) for d in args.runs)} --pools {args.pools}"
    body = (f"Machine: {machine()}. `{config.backbone.name}` trained by `{config.method['name']}` on {config.data.source}, "
            f"read at {config.augment.eval_size} px; accuracies in % on the {len(test):,} test images (few-shot: mean over "
            f"{config.eval.fewshot_seeds} draws).\n\n{markdown}\n\n`{command}`")
    print(markdown)
    if not args.no_write:
        update_section("readout-pools", body)


if __name__ == "__main__":
    main()
