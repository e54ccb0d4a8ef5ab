"""Training images/s per GPU and MFU of ImageNet-sized multi-crop runs, on synthetic data.

    python benchmarks/gpu.py                      # on a GPU machine: both models at 224 px
    python benchmarks/gpu.py --compile --json gpu.json
    python benchmarks/gpu.py --device cpu --size 48 --batch-size 2 --steps 1 --warmup 1 \\
        --models swav-regnety-200mf,dino-vit-tiny   # smoke run, no GPU

Measures, one model at a time on one device:
- SwAV on RegNetY-16GF (the SEER recipe's family), 2 x 224 px + 6 x 96 px crops;
- DINO on ViT-S/16, 2 x 224 px + 10 x 96 px crops (the paper's best ViT-S/16 setting);
- small stand-ins for a smoke run (``swav-regnety-200mf``, ``dino-vit-tiny``).
A step is what ``Trainer._step`` does: the method's hooks around its forward on the list of
crops, backward, gradient clipping where the recipe asks for it, the recipe's optimiser step.
As the trainer does on CUDA: bf16 autocast, channels-last for convnets, optionally
``torch.compile`` of the backbone (``--compile``); optimisers torch has a fused CUDA kernel for
(SGD, AdamW) are fused. Time comes from CUDA events after ``--warmup`` steps; FLOPs per step
from ``FlopCounterMode`` on one eager step; MFU = achieved FLOP/s over the GPU's bf16 matmul
peak measured here (as ``throughput.py`` holds the CPU to its fp32 matmul peak) and over the
datasheet's dense bf16 peak.

Not measured: data loading and JPEG decoding (the images are random uint8 tensors already on
the device), the on-device augmentation unless ``--augment``, the learning-rate schedule, the
collapse monitor, checkpoints, and gradient all-reduce (one process, so no DDP).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from common import machine, markdown_table, peak_matmul_flops, synchronize
from torch.utils.flop_counter import FlopCounterMode

from selfsup.augment.views import RECIPES, ViewMaker, seeded_generator
from selfsup.backbones import build_backbone, uses_convolutions
from selfsup.methods import Batch, StepInfo, build_method
from selfsup.modalities.image import default_local_size
from selfsup.train.optim import build_optimizer

# ImageNet's channel statistics: the normalisation only has to be realistic, not measured.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Model:
    method: str
    backbone: str
    recipe: str  # the view recipe of selfsup.augment.views.RECIPES, resized to --size
    local_crops: int
    title: str
    options: tuple[tuple[str, object], ...] = ()  # method options beyond the paper's defaults


MODELS = {
    "swav-regnety-16gf": Model("swav", "regnety-16gf", "multicrop", 6, "SwAV, RegNetY-16GF"),
    "dino-vit-small": Model("dino", "vit-small", "dino", 10, "DINO, ViT-S/16"),
    # Smoke stand-ins: the same methods and crop recipes on the smallest backbones, with narrow
    # heads (DINO's 65,536 outputs alone are 17M weights, student and teacher each).
    "swav-regnety-200mf": Model("swav", "regnety-200mf", "multicrop", 6, "SwAV, RegNetY-200MF, small head",
                                (("hidden_dim", 256), ("prototypes", 300))),
    "dino-vit-tiny": Model("dino", "vit-tiny", "dino", 10, "DINO, ViT-Ti/16, small head",
                           (("hidden_dim", 256), ("output_dim", 1024))),
}
DEFAULT_MODELS = "swav-regnety-16gf,dino-vit-small"

# Dense (no 2:4 sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, FLOP/s; the first
# name found in torch.cuda.get_device_name() wins. V100 has no bf16 tensor cores: its fp16
# figure is the ceiling, and bf16 autocast runs far below it there.
DATASHEET_PEAKS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("H200", 989e12),  # SXM (same compute as the H100 SXM, more memory)
    ("A100", 312e12),
    ("V100", 125e12),  # fp16
)

# Published throughput for scale (lightly's ImageNet1k benchmarks, "Benchmarks" page of the
# LightlySSL docs, https://docs.lightly.ai/self-supervised-learning/getting_started/benchmarks.html,
# checked against docs/source/getting_started/benchmarks.rst of lightly-ai/lightly).
# - ResNet-50, about 305 images/s per GPU: derived, not printed there. The page says the
#   ImageNet1k runs were on "2x4090 GPUs" at "35 min per epoch": 1,281,167 images / 2,100 s
#   / 2 GPUs = 305. That is one figure for the whole table (mostly ResNet-50 at a global batch
#   of 256, 128 per GPU, two to eight crops depending on the method), end to end: JPEG decoding
#   and augmentation in DataLoader workers, PyTorch Lightning's loop, DDP over two GPUs, and
#   the scripts' default "16-mixed" precision, on 24 GB consumer cards.
# - DINO ViT-S/16, about 145 images/s per GPU: NOT on the page, which gives no per-model time.
#   Its DINO ViT-S/16 row is a global batch of 128 for 100 epochs (the checkpoint is at step
#   1,000,900 = 10,009 steps per epoch); lightly's benchmarks/imagenet/vitb16/dino.py uses
#   2 x 224 + 8 x 96 crops (10 local crops is commented out), and that run's TensorBoard log
#   names a 4x4090 host. Treat the figure as unverified: 145 x 2 GPUs would be 74 min per epoch.
PUBLISHED = (
    ("ResNet-50 (SSL methods), lightly, 2x RTX 4090", "~305",
     "derived: 35 min per ImageNet epoch on 2 GPUs; end to end (data loading, DDP, fp16 mixed), global batch 256"),
    ("DINO ViT-S/16, lightly", "~145 (unverified)",
     "not stated on the page; its row: global batch 128, 2 x 224 + 8 x 96 crops in lightly's script"),
)


def datasheet_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in DATASHEET_PEAKS if key in name), None)


def fused(optimizer: torch.optim.Optimizer) -> tuple[torch.optim.Optimizer, str]:
    """The same optimiser rebuilt with torch's fused CUDA kernel where torch has one (SGD,
    AdamW): one launch for all tensors instead of a few per tensor. LARS is selfsup's own
    per-tensor loop and stays as it is."""
    kind = type(optimizer).__name__
    if not isinstance(optimizer, (torch.optim.SGD, torch.optim.AdamW)):
        return optimizer, kind
    groups = [{key: value for key, value in group.items() if key not in ("foreach", "fused")}
              for group in optimizer.param_groups]
    return type(optimizer)(groups, lr=optimizer.defaults["lr"], fused=True), f"{kind}, fused"


class Stopwatch:
    """Seconds between start() and stop(): CUDA events on a GPU (the kernels' time, not the
    host's), perf_counter after a synchronize elsewhere."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self) -> None:
        if self.device.type == "cuda":
            self.begin, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.begin.record()
        else:
            self.begin_time = time.perf_counter()

    def stop(self) -> float:
        if self.device.type == "cuda":
            self.end.record()
            self.end.synchronize()
            return self.begin.elapsed_time(self.end) / 1000
        return time.perf_counter() - self.begin_time


def measure(name: str, args: argparse.Namespace, device: torch.device) -> dict:
    spec = MODELS[name]
    torch.manual_seed(0)
    backbone, dim = build_backbone(spec.backbone, 3, image_size=args.size)
    method = build_method({"name": spec.method, **dict(spec.options)}, backbone, dim).to(device)
    channels_last = uses_convolutions(method)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    recipe = type(method).train_recipe
    # The trainer's rate: the recipe's per-256 rate scaled to the batch (one process here);
    # momentum 0.9 is train.momentum's default.
    lr = recipe["lr"] * args.batch_size / 256
    optimizer = build_optimizer(recipe["optimizer"], method, lr, recipe.get("weight_decay", 0.0), 0.9,
                                method.fixed_lr_modules())
    optimizer_name = type(optimizer).__name__
    if device.type == "cuda":
        optimizer, optimizer_name = fused(optimizer)
    clip_grad = recipe.get("clip_grad")
    autocast = device.type == "cuda"  # the trainer's precision=auto: bf16 on CUDA, fp32 on the CPU

    view_recipe = dataclasses.replace(RECIPES[spec.recipe], global_size=args.size,
                                      local_crops=spec.local_crops, local_size=default_local_size(args.size))
    view_maker = ViewMaker(view_recipe, IMAGENET_MEAN, IMAGENET_STD)
    images = torch.randint(0, 256, (args.batch_size, 3, args.size, args.size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0)).to(device)
    batch = Batch(indices=torch.arange(args.batch_size, device=device))

    def views(step: int) -> list[torch.Tensor]:
        made = view_maker(images, seeded_generator(0, step, device))
        if channels_last:
            made = [view.contiguous(memory_format=torch.channels_last) for view in made]
        return made

    fixed_views = views(0)
    # Steps from 1 on with one step per "epoch": SwAV's prototypes and DINO's last layer are
    # frozen during the first epoch, and a benchmark of the frozen steps would skip their
    # gradients; the length only sets schedules (DINO's teacher temperature), not cost.
    total_steps = 1 + args.warmup + args.steps + 2

    def step(index: int) -> None:
        info = StepInfo(1 + index, total_steps, 1)
        method.on_step_start(info)
        step_views = views(index) if args.augment else fixed_views
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            output = method(step_views, batch)
        # The trainer reads the loss every step (its divergence check): a host sync it pays too.
        output.loss.detach().item()
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        if clip_grad:
            torch.nn.utils.clip_grad_norm_(method.parameters(), clip_grad)
        optimizer.step()
        method.on_step_end(info)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # FLOPs of one eager step, before compiling: FlopCounterMode sees the aten ops of forward
    # and backward (teacher forward included); the optimiser's element-wise work counts 0.
    with FlopCounterMode(display=False) as counter:
        step(0)
    flops_per_step = counter.get_total_flops()
    if args.compile:
        # Every copy of the backbone (DINO's teacher holds one): in place, so that parameter
        # names, the EMA update and the optimiser see the same tensors.
        for module_name, module in method.named_modules():
            if module_name.rsplit(".", 1)[-1] == "backbone":
                module.compile()
    for index in range(1, 1 + args.warmup):  # allocator, cuDNN/oneDNN plans, compilation
        step(index)
    synchronize(device)
    stopwatch = Stopwatch(device)
    stopwatch.start()
    for index in range(1 + args.warmup, 1 + args.warmup + args.steps):
        step(index)
    seconds = stopwatch.stop() / args.steps
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None

    result = {
        "model": name, "title": spec.title, "method": spec.method, "backbone": spec.backbone,
        "crops": f"2x{args.size} + {spec.local_crops}x{view_recipe.local_size}",
        "batch_per_device": args.batch_size, "optimizer": optimizer_name, "compile": args.compile,
        "augment_in_step": args.augment, "seconds_per_step": seconds, "images_per_second": args.batch_size / seconds,
        "flops_per_step": flops_per_step, "flops_per_second": flops_per_step / seconds,
        "peak_memory_bytes": memory,
    }
    return result


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    # 64 per GPU is the papers' own: SwAV 4,096 on 64 GPUs, DINO ViT-S/16 1,024 on 16.
    parser.add_argument("--batch-size", type=int, default=64, help="images per GPU (each gives all its crops)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (use more with --compile)")
    parser.add_argument("--size", type=int, default=224, help="global crop size; local crops are 3/7 of it")
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone (warm-up then compiles)")
    parser.add_argument("--augment", action="store_true", help="make the crops on the device inside each step, as the trainer does")
    parser.add_argument("--json", metavar="OUT", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODELS]
    if unknown or not names:
        parser.error(f"--models: unknown {', '.join(unknown) or '(none given)'}; available: {', '.join(MODELS)}")
    if min(args.batch_size, args.steps, args.size) < 1 or args.warmup < 0:
        parser.error("--batch-size, --steps and --size must be positive, --warmup not negative")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu.py: CUDA is not available (torch "
              f"{torch.__version__}); run it on a GPU machine, or pass --device cpu for a smoke run", file=sys.stderr)
        sys.exit(2)

    device = torch.device(args.device)
    # The dtype the step's matmuls run in: bf16 under autocast on CUDA, fp32 on the CPU.
    peak_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sizes, seconds = ((8192, 16384), 4.0) if device.type == "cuda" else ((512,), 0.5)
    print(f"machine: {machine()}")
    peak = peak_matmul_flops(device, peak_dtype, sizes, seconds)
    sheet = datasheet_peak(device)
    dtype_name = str(peak_dtype).removeprefix("torch.")
    print(f"measured peak {dtype_name} matmul: {peak / 1e12:,.2f} TFLOP/s; datasheet: "
          + (f"{sheet / 1e12:,.0f} TFLOP/s" if sheet else "n/a"))

    results = []
    for name in names:
        result = measure(name, args, device)
        gc.collect()  # the model went out of scope with measure(): free its memory before the next
        if device.type == "cuda":
            torch.cuda.empty_cache()
        result["mfu_measured_peak"] = result["flops_per_second"] / peak
        result["mfu_datasheet"] = result["flops_per_second"] / sheet if sheet else None
        results.append(result)
        print(f"{name}: {result['images_per_second']:,.1f} images/s, {result['flops_per_second'] / 1e12:,.2f} TFLOP/s, "
              f"{result['seconds_per_step'] * 1000:,.1f} ms/step ({result['optimizer']})", flush=True)

    rows = [[
        f"{r['title']} ({r['crops']})", r["batch_per_device"], f"{r['images_per_second']:,.1f}",
        f"{r['flops_per_second'] / 1e12:,.2f}", percent(r["mfu_measured_peak"]), percent(r["mfu_datasheet"]),
        "n/a" if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2**30:,.1f} GiB",
    ] for r in results]
    table = markdown_table(["model", "batch per GPU", "img/s per GPU", "TFLOP/s", "MFU (measured peak)",
                            "MFU (datasheet)", "peak memory"], rows)
    published = markdown_table(["published", "img/s per GPU", "setting"], [list(row) for row in PUBLISHED])
    print()
    print(table)
    print()
    print(published)
    print()
    print(f"Synthetic uint8 images on {device.type}, {'bf16 autocast' if peak_dtype == torch.bfloat16 else 'fp32'}"
          f"{', torch.compile' if args.compile else ''}; {args.warmup} warm-up + {args.steps} timed steps; "
          f"crops {'made in' if args.augment else 'made once, outside'} the timed step; no data loading, no DDP. "
          "TFLOP/s counts FlopCounterMode's FLOPs of one step (fused attention counted on CUDA, not on the CPU).")

    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine(), "device": device.type, "peak_matmul_flops": peak, "peak_dtype": dtype_name,
            "datasheet_peak_flops": sheet, "size": args.size, "steps": args.steps, "warmup": args.warmup,
            "results": results,
            "published": [dict(zip(("what", "images_per_second_per_gpu", "setting"), row)) for row in PUBLISHED],
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
