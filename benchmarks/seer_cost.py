"""What SEER costs: the `seer` recipe planned on the paper's 512 V100s and on H100 and H200 machines.

    python benchmarks/seer_cost.py [--no-write]

SEER (Goyal et al. 2021, "Self-supervised Pretraining of Visual Features in the Wild", sec.
3.2) trained SwAV on RegNetY-256GF over 1B images once: 114,890 iterations of 8,704 images at
6,125 ms each on 512 V100 32 GB, "8 days". This script plans the `seer` recipe with
`selfsup.plan` (parameters, FLOPs and activations counted on the meta device, nothing
trained), reports the utilisation the paper's time implies, and the time and memory per GPU on
512 V100s and on 8, 64 and 512 H100s and H200s; then writes the table into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import BENCHMARKS_FILE, markdown_table, update_section

from selfsup.plan import DEFAULT_UTILISATION, Plan, estimate, implied_utilisation
from selfsup.recipes import load_recipe

SECTION = "seer-cost"
HEADING = "## What SEER costs"
INTRO = """`benchmarks/seer_cost.py`: the `seer` recipe (SwAV on RegNetY-256GF, 2x224 + 4x96 crops,
16 images per GPU, bf16, activation checkpointing) planned by `selfsup.plan` on the meta
device: parameters counted exactly, FLOPs (2 x multiply-adds of convolutions and matrix
products, forward, backward and the recomputation of checkpointing) and saved activations read
off one training step, nothing trained. Time = FLOPs / (GPUs x dense peak x utilisation)."""

IMAGES = 1_000_000_000  # paper sec. 3.2: 114,890 iterations x 8,704 images
PAPER_SECONDS = 114_890 * 6.125  # paper sec. 3.2: 6,125 ms per iteration: 8.14 days
WELL_TUNED = 0.40  # what large transformers reach on H100s; an upper bound for a RegNet
MACHINES = [("v100", 512), ("h100", 8), ("h100", 64), ("h100", 512), ("h200", 8), ("h200", 64), ("h200", 512)]


def days(seconds: float) -> str:
    return f"{seconds / 86400:,.1f}"


def gib(plan: Plan, strategy: str) -> str:
    memory = plan.memory_for(strategy, checkpointing=True)
    return f"{memory.total / 2**30:,.1f}" + ("" if memory.fits else " (no)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    config = load_recipe("seer")
    seer = estimate(config, gpus=512, gpu="v100", images=IMAGES, epochs=1)
    implied = implied_utilisation(seer, PAPER_SECONDS)
    without_recompute = seer.images * (seer.forward_flops + seer.backward_flops) / (seer.peak_flops * PAPER_SECONDS)
    crops = " + ".join(f"{crop.count}x{crop.size}" for crop in seer.crops)
    facts = [
        (f"Parameters: {seer.parameters:,} ({seer.backbone_parameters:,} in the RegNetY-256GF trunk, the rest "
        f"the SwAV head and {config.method['prototypes']:,} prototypes); largest block "
        f"{seer.largest_block_parameters:,}."),
        (f"FLOPs per image ({crops}): forward {seer.forward_flops / 1e12:,.2f} T, backward "
        f"{seer.backward_flops / 1e12:,.2f} T, recomputation {seer.recompute_flops / 1e12:,.2f} T; "
        f"{seer.total_flops:,.3g} FLOPs for 1B images."),
        (f"Activations per image in bf16: {seer.activation_bytes / 2**20:,.0f} MiB, "
        f"{seer.checkpointed_activation_bytes / 2**20:,.0f} MiB with checkpointing."),
        (f"The paper's 512 V100s took {PAPER_SECONDS / 86400:.2f} days (114,890 x 6.125 s; \"8 days\"): "
        f"{implied:.1%} of their fp16 tensor peak (125 TFLOP/s) by this count, {without_recompute:.1%} "
        f"without the recomputation. The plan's default utilisation is {DEFAULT_UTILISATION:.0%}."),
    ]
    header = ["GPUs", f"days at {DEFAULT_UTILISATION:.0%}", f"days at {WELL_TUNED:.0%}",
              "GiB per GPU, FSDP + ckpt", "GiB per GPU, DDP + ckpt", "GPU memory"]
    rows = []
    for gpu, count in MACHINES:
        plan = seer.on(gpus=count, gpu=gpu)
        rows.append([f"{count} x {plan.gpu.name}", days(plan.seconds), days(plan.on(utilisation=WELL_TUNED).seconds),
                     gib(plan, "fsdp"), gib(plan, "ddp"), f"{plan.gpu.memory_bytes / 2**30:,.0f} GiB"])
    rows.insert(1, ["512 x V100 (the paper)", f"{PAPER_SECONDS / 86400:.2f} (measured)", "", "", "", ""])
    body = "\n".join([
        *(f"- {fact}" for fact in facts),
        "",
        markdown_table(header, rows),
        "",
        ("(no): over 90% of the GPU's memory. The V100 has no bf16: its fp16 tensor peak, as SEER used. "
        "Peaks are dense (no 2:4 sparsity): 125, 989 and 989 TFLOP/s."),
        "",
        "`python benchmarks/seer_cost.py`",
    ])
    print(body)
    if not args.no_write:
        text = BENCHMARKS_FILE.read_text()
        if HEADING not in text:
            Path(BENCHMARKS_FILE).write_text(text.rstrip() + f"\n\n{HEADING}\n\n{INTRO}\n")
        update_section(SECTION, body)


if __name__ == "__main__":
    main()
