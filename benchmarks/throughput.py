"""Training-step and augmentation throughput, against the machine's measured peak.

    python benchmarks/throughput.py [--batch-size 256] [--steps 5] [--no-write]

Prints, all measured in this one run:
- the peak fp32 matmul FLOP/s of the device (the best of two sizes);
- for the default CPU backbone, ResNet-18, RegNetY-400MF (small-image stems) and ViT-Tiny
  (4 px patches): SimCLR training images/s and the achieved FLOP/s (forward + backward,
  counted by torch's FlopCounterMode) as a share of that peak;
- augmentation images/s (two views each) of selfsup's batched on-device ViewMaker against a
  per-sample Pillow pipeline in DataLoader workers (the usual torchvision-style path of
  lightly and solo-learn), with the same operations, and the share of a training step the
  augmentation takes.
and writes the table into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time

import numpy as np
import torch
from common import machine, markdown_table, peak_matmul_flops, synchronize, update_section
from PIL import Image, ImageEnhance, ImageOps
from torch.utils.flop_counter import FlopCounterMode

from selfsup.augment.views import RECIPES, ViewMaker, seeded_generator
from selfsup.backbones import build_backbone
from selfsup.data import default_source, load_splits
from selfsup.distributed import resolve_device
from selfsup.methods import build_method
from selfsup.train.optim import build_optimizer


def training_step_rate(backbone: str, images: torch.Tensor, view_maker: ViewMaker, device, batch_size: int, steps: int):
    torch.manual_seed(0)
    module, dim = build_backbone(backbone, images.shape[1], image_size=view_maker.recipe.global_size)
    method = build_method({"name": "simclr"}, module, dim).to(device).to(memory_format=torch.channels_last)
    optimizer = build_optimizer("lars", method, lr=0.1, weight_decay=1e-5, momentum=0.9)
    batch = images[:batch_size].to(device)

    def step(index: int) -> None:
        views = [v.contiguous(memory_format=torch.channels_last) for v in view_maker(batch, seeded_generator(0, index, device))]
        loss = method(views).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    views = [v.contiguous(memory_format=torch.channels_last) for v in view_maker(batch, seeded_generator(0, 0, device))]
    with FlopCounterMode(display=False) as counter:
        method(views).loss.backward()
    flops_per_step = counter.get_total_flops()
    optimizer.zero_grad(set_to_none=True)
    for index in range(2):  # warm-up: allocator, oneDNN primitive caches
        step(index)
    synchronize(device)
    start = time.perf_counter()
    for index in range(steps):
        step(index)
    synchronize(device)
    seconds = (time.perf_counter() - start) / steps
    return batch_size / seconds, flops_per_step / seconds, seconds


def on_device_augment_rate(images: torch.Tensor, view_maker: ViewMaker, device, batch_size: int, repeats: int = 10) -> float:
    batch = images[:batch_size].to(device)
    view_maker(batch, seeded_generator(0, 0, device))
    synchronize(device)
    start = time.perf_counter()
    for index in range(repeats):
        view_maker(batch, seeded_generator(0, index, device))
    synchronize(device)
    return batch_size * repeats / (time.perf_counter() - start)


class PillowViews(torch.utils.data.Dataset):
    """The per-sample path: decode to PIL, random resized crop, flip, brightness/contrast
    jitter, grayscale, to tensor, normalise; two views per image, in DataLoader workers."""

    def __init__(self, images: torch.Tensor, size: int, scale: tuple[float, float], mean: float, std: float):
        self.images = images.numpy()
        self.size, self.scale, self.mean, self.std = size, scale, mean, std

    def __len__(self) -> int:
        return len(self.images)

    def _view(self, image: Image.Image) -> torch.Tensor:
        width, height = image.size
        for _ in range(10):
            area = width * height * random.uniform(*self.scale)
            ratio = np.exp(random.uniform(np.log(3 / 4), np.log(4 / 3)))
            w, h = int(round((area * ratio) ** 0.5)), int(round((area / ratio) ** 0.5))
            if 0 < w <= width and 0 < h <= height:
                break
        else:
            w, h = width, height
        left, top = random.randint(0, width - w), random.randint(0, height - h)
        view = image.resize((self.size, self.size), Image.BILINEAR, box=(left, top, left + w, top + h))
        if random.random() < 0.5:
            view = ImageOps.mirror(view)
        if random.random() < 0.8:
            view = ImageEnhance.Brightness(view).enhance(random.uniform(0.6, 1.4))
            view = ImageEnhance.Contrast(view).enhance(random.uniform(0.6, 1.4))
        if random.random() < 0.2:
            view = ImageOps.grayscale(view)
        array = torch.from_numpy(np.asarray(view, dtype=np.float32) / 255)
        return ((array - self.mean) / self.std).unsqueeze(0)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index, 0])
        return self._view(image), self._view(image)


def pillow_augment_rate(images: torch.Tensor, size: int, scale, mean: float, std: float, batch_size: int, workers: int, batches: int = 10) -> float:
    dataset = PillowViews(images[: batch_size * (batches + 2)], size, scale, mean, std)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=False)
    iterator = iter(loader)
    next(iterator)  # workers started
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        view_a, _ = next(iterator)
        count += len(view_a)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--resnet-steps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    device = resolve_device("auto")
    source = default_source()
    images, _, _ = load_splits(source)
    images = images.images[: max(args.batch_size * 12, 4096)]
    mean, std = 0.286, 0.353
    recipe = dataclasses.replace(RECIPES["small-images"], global_size=images.shape[-1])
    view_maker = ViewMaker(recipe, (mean,) * images.shape[1], (std,) * images.shape[1])

    print(f"machine: {machine()}")
    peak = peak_matmul_flops(device)
    print(f"peak fp32 matmul: {peak / 1e9:,.1f} GFLOP/s")

    rows = []
    step_seconds = {}
    above_peak = False
    native = recipe.global_size
    # The 16 px row is the crop size of the Fashion-MNIST benchmark recipe.
    backbones = (
        ("convnet-small", native, args.steps), ("convnet-small", 16, args.steps), ("resnet18-small", native, args.resnet_steps),
        ("regnety-400mf-small", native, args.resnet_steps), ("vit-tiny-small", native, args.resnet_steps),
    )
    for backbone, size, steps in backbones:
        maker = ViewMaker(dataclasses.replace(recipe, global_size=size), view_maker.mean, view_maker.std)
        rate, flops, seconds = training_step_rate(backbone, images, maker, device, args.batch_size, steps)
        step_seconds[backbone, size] = seconds
        print(f"{backbone} at {size} px: {rate:,.0f} images/s, {flops / 1e9:,.1f} GFLOP/s = {100 * flops / peak:.0f}% of peak")
        rows.append([f"SimCLR step, {backbone}, {size} px views", f"{rate:,.0f}", f"{flops / 1e9:,.1f}", f"{100 * flops / peak:.0f}%"])
        above_peak |= flops > peak

    ours = on_device_augment_rate(images, view_maker, device, args.batch_size)
    pillow = pillow_augment_rate(images, recipe.global_size, recipe.global_scale, mean, std, args.batch_size, args.workers)
    share = (args.batch_size / ours) / step_seconds["convnet-small", native]
    print(f"augmentation (2 views/image): selfsup on {device.type} {ours:,.0f} images/s, "
          f"Pillow per sample in {args.workers} workers {pillow:,.0f} images/s -> {ours / pillow:.1f}x; "
          f"{100 * share:.1f}% of a convnet-small step at {native} px")
    rows.append([f"augmentation, selfsup batched on {device.type}", f"{ours:,.0f}", "", f"{100 * share:.1f}% of a convnet-small {native} px step"])
    rows.append([f"augmentation, Pillow per sample, {args.workers} workers", f"{pillow:,.0f}", "", f"selfsup {ours / pillow:.1f}x faster"])

    table = markdown_table(["what", "images/s", "GFLOP/s", "share of peak"], rows)
    body = (
        f"Machine: {machine()}. Measured peak fp32 matmul: {peak / 1e9:,.1f} GFLOP/s. "
        f"Data: {source} ({images.shape[1]}x{images.shape[2]}x{images.shape[3]}), batch {args.batch_size}, "
        f"SimCLR recipe `small-images`.\n\n{table}\n\n"
        + ("Shares above 100%: those convolutions ran faster than the best square matmul measured in the same "
           "process (oneDNN's convolution kernels against the BLAS sgemm); the peak is a measurement, not a bound.\n\n"
           if above_peak else "")
        + "`python benchmarks/throughput.py`"
    )
    print(table)
    if not args.no_write:
        update_section(f"throughput-{device.type}", body)


if __name__ == "__main__":
    main()
