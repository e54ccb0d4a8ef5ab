"""Streaming against memory: images ready for a training step per second, and resident memory.

    python benchmarks/data.py [--images 2560] [--sizes 32 96 224] [--tiny 10000 100000] [--quick] [--no-write]

Prints, all measured in this one run on data the script writes into a temporary folder:
- decode + augment images/s of photo-like JPEGs (320x240 smooth random gradients and noise,
  quality 90) stored at each size, from four sources: tar shards (``selfsup shards``)
  streamed with 1 and with 2 DataLoader workers, a folder streamed with 2 workers, and the
  set already decoded in memory (``load_splits``, random batches by ``gather``); each batch
  then goes through the training augmentation on the CPU (the default recipe's view maker,
  from the resolved config of a plain ``simclr`` run, as the trainer builds it), so the
  figure is images per second ready for a training step;
- beside it the training step's consumption rate on the CPU, ``simclr`` on
  ``convnet-small`` (forward, backward and the optimiser step on ready views, as
  ``Trainer._step``), and the ratio loader / training (above 1: the loader keeps up);
- the peak resident memory (VmHWM) of a fresh process that streams one whole epoch of
  10,000 and of 100,000 tiny PNGs (32x32 solid colours, stored at 32 px) from shards with
  2 workers, and of one that decodes the same images into memory (``load_splits``) and
  draws an epoch of batches from it; the DataLoader workers are other processes and not
  counted.
and writes the tables into BENCHMARKS.md (not with ``--quick``, a smoke run of small counts).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from common import machine, markdown_table, update_section
from PIL import Image

from selfsup.augment.views import seeded_generator
from selfsup.backbones import uses_convolutions
from selfsup.config import Config, apply_overrides
from selfsup.data import load_splits
from selfsup.data.images import inspect_source, open_stream
from selfsup.data.packing import pack_shards
from selfsup.modalities.image import ImageModality
from selfsup.runs import build_model, resolve
from selfsup.train.optim import build_optimizer

BATCH = 256  # the default train.batch_size; the streaming loaders' batch
#: DataLoader's advice against more workers than the process's cores (the point here is to measure them).
warnings.filterwarnings("ignore", message="This DataLoader will create")


def machine_line() -> str:
    return f"{machine()}; process pinned to {len(os.sched_getaffinity(0))} core(s)"


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError("no VmHWM in /proc/self/status")


# --------------------------------------------------------------------------- synthetic data


def photo_like_folder(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` 320x240 JPEGs (quality 90): smooth random colour gradients (a 4x3 grid of
    random colours, bicubic-upsampled) plus Gaussian noise, in 10 class folders."""
    rng = np.random.default_rng(seed)
    for number in range(count):
        folder = root / f"class{number % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        grid = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize((320, 240), Image.Resampling.BICUBIC)
        pixels = np.asarray(grid, dtype=np.float32) + rng.normal(0, 8, (240, 320, 3)).astype(np.float32)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{number:06d}.jpg", "JPEG", quality=90)
    return root


def tiny_png_folder(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` 32x32 PNGs of solid colours (1,024 distinct files' bytes, written over and
    over: what is measured is how many files, not what they show), in 10 class folders."""
    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(1024):
        buffer = io.BytesIO()
        Image.fromarray(np.full((32, 32, 3), rng.integers(0, 256, 3), dtype=np.uint8)).save(buffer, "PNG")
        blobs.append(buffer.getvalue())
    for label in range(10):
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
    for number in range(count):
        (root / f"class{number % 10}" / f"{number:06d}.png").write_bytes(blobs[number % len(blobs)])
    return root


# --------------------------------------------------------------------------- rates


def resolved_config(folder: Path, images, size: int) -> Config:
    """A plain ``simclr`` run's config on the folder at ``size`` px, resolved as ``runs.train`` does
    (the method's recipe, its default augmentation, the normalisation measured on ``images``)."""
    config = apply_overrides(Config(), [f"data.source={folder}", "data.channels=3", f"data.size={size}",
                                        "method.name=simclr", f"train.batch_size={BATCH}"])
    return resolve(config, images)


def ready_views(view_maker, images: torch.Tensor, step: int, channels_last: bool) -> list[torch.Tensor]:
    """The training views of a batch, as ``TrainingBatches._views`` makes them."""
    views = view_maker(images, seeded_generator(0, step, "cpu"))
    return [view.contiguous(memory_format=torch.channels_last) for view in views] if channels_last else views


def stream_rate(spec: Path, size: int, workers: int, view_maker, channels_last: bool) -> float:
    """Images/s of one streamed epoch, decoded by ``workers`` processes and augmented here,
    from opening the loader to the last batch's views."""
    start = time.perf_counter()
    stream = open_stream(inspect_source(str(spec)), channels=3, size=size, workers=workers)
    count = 0
    for batch in stream.epoch(0, 0, batch=BATCH, world=1, rank=0):
        ready_views(view_maker, batch.images, batch.step, channels_last)
        count += len(batch.images)
    return count / (time.perf_counter() - start)


def memory_rate(images, batches: int, view_maker, channels_last: bool) -> float:
    """Images/s of ``batches`` random batches drawn from decoded images and augmented."""
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for step in range(batches):
        indices = torch.randint(len(images), (BATCH,), generator=generator)
        ready_views(view_maker, images.gather(indices, torch.device("cpu")), step, channels_last)
    return batches * BATCH / (time.perf_counter() - start)


def training_rate(config: Config, images, view_maker, batch: int, steps: int) -> float:
    """Images/s the training step consumes: forward, backward and the optimiser step of the
    method on ready views (as ``Trainer._step``, augmentation excluded), after one warm-up step."""
    method = build_model(config)
    channels_last = uses_convolutions(method)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    train = config.train
    optimizer = build_optimizer(train.optimizer, method, train.lr, train.weight_decay, train.momentum)
    views = ready_views(view_maker, images.gather(torch.arange(batch), torch.device("cpu")), 0, channels_last)

    def step() -> None:
        output = method(views)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def training_batch(size: int, requested: int) -> int:
    """The batch the training rate is timed on: the default 256 at 32 px, fewer images at larger
    sizes (the same pixels per step, at least 16) so that a step on one core takes seconds."""
    return min(requested, max(16, requested * 32 * 32 // (size * size)))


# --------------------------------------------------------------------------- resident memory


def child(kind: str, spec: str) -> None:
    """In a fresh process: one epoch of ``spec`` at 32 px, streamed from shards with 2 workers
    (``stream``) or decoded into memory and drawn in random batches (``memory``); prints
    ``VmHWM_MB images seconds``."""
    start = time.perf_counter()
    count = 0
    if kind == "stream":
        stream = open_stream(inspect_source(spec), channels=3, size=32, workers=2)
        for batch in stream.epoch(0, 0, batch=BATCH, world=1, rank=0):
            count += len(batch.images)
    else:
        images = load_splits(spec, 3, 32, workers=2)[0]
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
        for first in range(0, len(images) - BATCH + 1, BATCH):
            count += len(images.gather(order[first : first + BATCH], torch.device("cpu")))
    print(f"{peak_rss_mb():.1f} {count} {time.perf_counter() - start:.2f}")


def measure_child(kind: str, spec: Path) -> tuple[float, int, float]:
    done = subprocess.run([sys.executable, __file__, "--child", kind, str(spec)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {kind} process on {spec} failed:\n{done.stderr}")
    peak, count, seconds = done.stdout.split()[-3:]
    return float(peak), int(count), float(seconds)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2560, help="photo-like JPEGs (a streamed epoch: this // 256 batches)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 96, 224], help="stored sizes (px)")
    parser.add_argument("--tiny", type=int, nargs="+", default=[10_000, 100_000], help="tiny PNG counts for resident memory")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps per size (after one warm-up)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small counts, nothing written")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.quick:
        args.images, args.sizes, args.tiny, args.train_steps, args.no_write = 512, [32, 96], [1000, 4000], 1, True

    started = time.perf_counter()
    print(f"machine: {machine_line()}")
    print(f"torch threads: {torch.get_num_threads()}, cores of the machine: {os.cpu_count()}, "
          f"cores this process may use: {len(os.sched_getaffinity(0))}")
    with tempfile.TemporaryDirectory(prefix="selfsup-bench-data-") as temp:
        temp = Path(temp)
        t0 = time.perf_counter()
        folder = photo_like_folder(temp / "photos", args.images)
        t1 = time.perf_counter()
        packed = pack_shards(str(folder), temp / "photos-shards", workers=1, progress=False)
        t2 = time.perf_counter()
        megabytes = sum(f.stat().st_size for f in folder.rglob("*.jpg")) / 1e6
        print(f"data: {args.images:,} photo-like 320x240 JPEGs ({megabytes:.1f} MB) written in {t1 - t0:.1f} s, "
              f"packed into {packed['shards']} shard(s) in {t2 - t1:.1f} s")

        rows = []
        batches = args.images // BATCH
        for size in args.sizes:
            memory_images = load_splits(str(folder), 3, size, workers=2)[0]
            config = resolved_config(folder, memory_images, size)
            view_maker = ImageModality().build_view_maker(config)
            channels_last = True  # convnet-small: the trainer feeds channels-last views
            loaders = {
                "shards, 1 worker": stream_rate(temp / "photos-shards", size, 1, view_maker, channels_last),
                "shards, 2 workers": stream_rate(temp / "photos-shards", size, 2, view_maker, channels_last),
                "folder, 2 workers": stream_rate(folder, size, 2, view_maker, channels_last),
                "memory": memory_rate(memory_images, batches, view_maker, channels_last),
            }
            train_batch = training_batch(size, BATCH)
            training = training_rate(config, memory_images, view_maker, train_batch, args.train_steps)
            print(f"{size} px (recipe {config.augment.recipe}, views {config.augment.global_size} px): "
                  + ", ".join(f"{name} {rate:,.0f}" for name, rate in loaders.items())
                  + f" images/s ready; training step {training:,.1f} images/s (batch {train_batch})")
            rows.append([f"{size} px", *(f"{rate:,.0f} ({rate / training:,.1f}x)" for rate in loaders.values()),
                         f"{training:,.1f} (batch {train_batch})"])
            del memory_images
        speed = markdown_table(["stored size", *(f"{name}" for name in loaders), "training step"], rows)
        print(speed)

        memory_rows, peaks = [], {}
        for count in args.tiny:
            tiny = tiny_png_folder(temp / f"tiny-{count}", count)
            pack_shards(str(tiny), temp / f"tiny-{count}-shards", workers=1, progress=False)
            stream_peak, streamed, stream_seconds = measure_child("stream", temp / f"tiny-{count}-shards")
            memory_peak, drawn, memory_seconds = measure_child("memory", tiny)
            peaks[count] = stream_peak, memory_peak
            print(f"{count:,} tiny PNGs: streaming peak RSS {stream_peak:,.1f} MB ({streamed:,} images in {stream_seconds:.1f} s), "
                  f"in memory {memory_peak:,.1f} MB ({drawn:,} images in {memory_seconds:.1f} s)")
            memory_rows.append([f"{count:,}", f"{stream_peak:,.1f}", f"{memory_peak:,.1f}"])
        first, last = args.tiny[0], args.tiny[-1]
        stream_growth = peaks[last][0] / peaks[first][0]
        memory_growth = peaks[last][1] / peaks[first][1]
        memory_rows.append([f"{last:,} / {first:,}", f"{stream_growth:.3f}x", f"{memory_growth:.3f}x"])
        memory = markdown_table(["images (32 px, 3 channels)", "streamed from shards, 2 workers: peak RSS MB",
                                 "in memory (load_splits): peak RSS MB"], memory_rows)
        print(memory)
        verdict = "within" if abs(stream_growth - 1) <= 0.10 else "NOT within"
        print(f"streaming peak RSS {last:,} against {first:,}: {stream_growth:.3f}x ({verdict} 10%); in memory {memory_growth:.3f}x")
    seconds = time.perf_counter() - started
    print(f"benchmark time: {seconds / 60:.1f} min")

    cores = sorted(os.sched_getaffinity(0))
    pinned = f"taskset -c {','.join(map(str, cores))} " if len(cores) < (os.cpu_count() or 1) else ""
    command = f"{pinned}python benchmarks/data.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    body = (
        f"Machine: {machine_line()}. {args.images:,} photo-like 320x240 JPEGs (quality 90) decoded to each stored size, "
        f"in batches of {BATCH}, then the views of the default recipe (`small-images`, as a plain `simclr` run resolves it) "
        f"made on the CPU; in brackets the ratio to the training step (`simclr` on `convnet-small`: forward, backward "
        f"and LARS step on ready views).\n\n"
        f"Images/s ready for a training step:\n\n{speed}\n\n"
        f"Peak resident memory of a fresh process reading one epoch of tiny PNGs (32x32 solid colours) at 32 px "
        f"(the DataLoader workers' own memory is not counted):\n\n{memory}\n\n"
        f"`{command}` ({seconds / 60:.1f} min)"
    )
    if not args.no_write:
        update_section("data-stream-cpu", body)


if __name__ == "__main__":
    main()
