"""Images: Fashion-MNIST, digits or a folder; augmented views; kNN, linear and few-shot
probes, energy AUC and collapse, beside raw pixels and the backbone at random init; and
``selfsup embed --data``."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from selfsup.augment.views import RECIPES, ViewMaker, crop_size, default_eval_size, seeded_generator
from selfsup.backbones import BACKBONES, build_backbone, design_size, new_run_pool, uses_convolutions
from selfsup.config import Config, ConfigError
from selfsup.data import (
    BUILTIN_SOURCES,
    DataError,
    ImageSet,
    default_source,
    describe_skipped,
    iter_folder_batches,
    load_splits,
)
from selfsup.data.folder import describe_warnings, scan_folder
from selfsup.data.images import SourceInfo, evaluation_splits, inspect_source, open_stream
from selfsup.data.shards import is_shard_dir
from selfsup.data.stream import StreamingImageSet
from selfsup.evaluate.pipeline import encode, evaluate_method
from selfsup.files import write_atomic
from selfsup.methods import Method, method_class
from selfsup.modalities.base import LoadedRun, Modality, fingerprint, say
from selfsup.report.frames import save_png
from selfsup.report.reconstructions import reconstruction_grid

STREAM_CHOICES = ("auto", "always", "never")


def _amount(size: int) -> str:
    """A byte count as people write it: '812 KiB', '14.2 GiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}" if size < 10 * scale else f"{size / scale:,.0f} {unit}"
    return f"{size} bytes"


def decoding(config: Config) -> dict[str, Any]:
    """How the run decodes image files: the background of transparent pixels and the pixel limit."""
    return {"background": config.data.background, "max_pixels": config.data.max_pixels}


def default_local_size(global_size: int) -> int:
    """Multi-crop's 96 px local crops of 224 px global ones, kept in proportion."""
    return max(4, round(global_size * 3 / 7))


def channel_statistics(images: torch.Tensor, max_images: int = 10_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [N, C, H, W] scaled to [0, 1]."""
    sample = images[:max_images].float() / 255
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


class ImageModality(Modality):
    name = "image"
    default_backbone = "convnet-small"

    def default_source(self) -> str:
        """Fashion-MNIST, falling back to digits with a message when it is not installed."""
        source = default_source()
        if source != "fashion-mnist":
            say("Fashion-MNIST is not installed (apt-get install -y dataset-fashion-mnist); using the bundled 8x8 digits")
        return source

    def load_data(self, config: Config, run_dir: Path, evaluation: bool = True
                  ) -> tuple[ImageSet | StreamingImageSet, ImageSet | None, ImageSet | None]:
        """A built-in set, or a folder or shard directory at its stated size, in memory or
        streamed by the stated rule (data.stream, data.cache_mb), said in the log. Without
        ``evaluation`` a streamed source's evaluation splits are not decoded (None)."""
        data = config.data
        if data.stream not in STREAM_CHOICES:
            raise ConfigError(f"data.stream: {data.stream!r} is not one of {', '.join(STREAM_CHOICES)}")
        info = inspect_source(data.source)
        if info is None:
            if data.stream == "always":
                raise ConfigError(f"data.stream=always: {data.source} is a built-in set held in memory; stream a folder or a "
                                  f"shard directory (selfsup shards {data.source} --out DIR)")
            return load_splits(data.source, data.channels, data.size, data.workers, **decoding(config))
        channels, size = data.channels or info.default_channels, data.size or self._default_size(config, info)
        if not data.channels:
            say(f"data.channels={channels}: {'grey' if info.grey else 'colour (or mixed)'} images (set data.channels to change)")
        decoded = info.decoded_bytes(channels, size)
        # In memory, the evaluation splits are copies beside the whole set: about twice the decoded size.
        stream = data.stream == "always" or (data.stream == "auto" and 2 * decoded > data.cache_mb * 2**20)
        what = f"{info.count:,} {'files' if info.kind == 'folder' else 'packed images'} at {size} px x {channels} channel(s)"
        if not stream:
            say(f"data: {what} take {_amount(decoded)} decoded, {_amount(2 * decoded)} with the evaluation splits"
                + (f", within data.cache_mb={data.cache_mb:,}: decoding once into memory" if data.stream == "auto" else ""))
            return load_splits(data.source, channels, size, data.workers, **decoding(config))
        say(f"data: {what} would take {_amount(decoded)} decoded, {_amount(2 * decoded)} with the evaluation splits"
            + (f", more than data.cache_mb={data.cache_mb:,}" if data.stream == "auto" else "")
            + f": streaming, decoded by {data.workers} worker process(es)")
        pretrain = open_stream(info, channels, size, data.workers, buffer=data.shuffle_buffer, **decoding(config))
        if not evaluation:
            return pretrain, None, None
        every = pretrain if info.kind == "folder" else open_stream(info, channels, size, data.workers, pretrain_only=False,
                                                                     **decoding(config))
        say(f"evaluation: up to {config.eval.streamed_train:,} labelled train and {config.eval.streamed_test:,} held-out images "
            "(eval.streamed_train, eval.streamed_test), decoding")
        train, test = evaluation_splits(every, info, config.eval.streamed_train, config.eval.streamed_test)
        return pretrain, train, test

    @staticmethod
    def _default_size(config: Config, info: SourceInfo) -> int:
        backbone = config.backbone.name or method_class(config.method["name"]).default_backbone or ImageModality.default_backbone
        size = info.default_size(design_size(backbone))
        typical = "no readable image" if info.median_side is None else f"median shorter side {info.median_side} px"
        say(f"data.size={size}: {typical}; {backbone} is made for {design_size(backbone)} px (set data.size to change)")
        return size

    def resolve(self, config: Config, pretrain_set: ImageSet) -> Config:
        """The augmentation recipe (the method's unless set), its crop sizes and the
        normalisation measured on the data; the stored image shape; the backbone's pooling."""
        recipe_name = config.augment.recipe or method_class(config.method["name"]).default_recipe
        if recipe_name not in RECIPES:
            raise ConfigError(f"augment.recipe: unknown recipe {recipe_name!r}; available: {', '.join(RECIPES)}")
        recipe = RECIPES[recipe_name]
        mean, std = config.augment.mean, config.augment.std
        if mean is None or std is None:
            sample = pretrain_set.preview(1000) if isinstance(pretrain_set, StreamingImageSet) else pretrain_set.images
            measured_mean, measured_std = channel_statistics(sample)
            mean = mean or measured_mean
            std = std or measured_std
        global_size = config.augment.global_size or crop_size(recipe.global_size, pretrain_set.height)
        spec = BACKBONES.get(config.backbone.name)
        patch = spec.patch if spec is not None and spec.patch else 1
        augment = dataclasses.replace(
            config.augment,
            recipe=recipe_name,
            global_size=global_size,
            # A vision transformer's local crops hold at least one patch.
            local_size=config.augment.local_size or min(global_size, max(patch, default_local_size(global_size))),
            global_scale=config.augment.global_scale or recipe.global_scale,
            local_crops=recipe.local_crops if config.augment.local_crops is None else config.augment.local_crops,
            eval_size=config.augment.eval_size or default_eval_size(global_size, pretrain_set.height),
            mean=tuple(mean),
            std=tuple(std),
        )
        smallest = augment.local_size if augment.local_crops else augment.global_size
        if smallest < patch:
            crop = "local crops" if augment.local_crops else "images"
            raise ConfigError(
                f"backbone.name={config.backbone.name} cuts {patch} px patches, larger than the {smallest} px {crop}: "
                f"use a -small variant (4 px patches) or larger images (data.size, augment.global_size, augment.local_size)"
            )
        for name, value in (("mean", augment.mean), ("std", augment.std)):
            if len(value) != pretrain_set.channels:
                raise ConfigError(f"augment.{name} has {len(value)} values but the images have {pretrain_set.channels} channels")
        data = dataclasses.replace(config.data, channels=pretrain_set.channels, size=pretrain_set.height)
        pool = new_run_pool(config.backbone.name, config.backbone.pool, method_class(config.method["name"]).default_pool)
        backbone = dataclasses.replace(config.backbone, pool=pool)
        return dataclasses.replace(config, augment=augment, data=data, backbone=backbone)

    def build_view_maker(self, config: Config) -> ViewMaker:
        augment = config.augment
        recipe = dataclasses.replace(
            RECIPES[augment.recipe],
            global_size=augment.global_size,
            global_scale=augment.global_scale,
            local_crops=augment.local_crops,
            local_size=augment.local_size or default_local_size(augment.global_size),
        )
        # Runs from before eval_size existed read whole images at the global crop size.
        return ViewMaker(recipe, augment.mean, augment.std, eval_size=augment.eval_size or augment.global_size)

    def build_backbone(self, config: Config, method: type[Method]) -> tuple[nn.Module, int, dict[str, Any]]:
        backbone, dim = build_backbone(config.backbone.name, config.data.channels, config.backbone.width, config.data.size,
                                       config.backbone.pool)
        return backbone, dim, {}

    def baseline_key(self, config: Config, method: Method, train: ImageSet, test: ImageSet) -> dict[str, Any]:
        """Raw pixels read the evaluation images; the random-init backbone also its seed,
        its configuration and the evaluation view. The images themselves are hashed, so a
        folder whose files changed is measured again."""
        augment = config.augment
        return {
            "modality": self.name,
            "data": [config.data.source, config.data.size, config.data.channels,
                     fingerprint(train.images, train.labels), fingerprint(test.images, test.labels)],
            "view": [augment.eval_size or augment.global_size, list(augment.mean), list(augment.std)],
            "backbone": dataclasses.asdict(config.backbone),
            # A method whose embed is not the backbone's output reads its random init its own way.
            "embed": "backbone" if type(method).embed is Method.embed else method.name,
            "seed": config.train.seed,
            "fewshot_seeds": config.eval.fewshot_seeds,
        }

    def evaluate(self, method: Method, view_maker: ViewMaker, config: Config, train: ImageSet, test: ImageSet,
                 device: torch.device, run_dir: Path, baselines: dict[str, Method]) -> dict:
        say("evaluating: kNN, linear probe, few-shot, energy AUC, collapse, baselines")
        return evaluate_method(
            method, view_maker, train, test, device,
            fewshot_seeds=config.eval.fewshot_seeds,
            energy_images=config.eval.energy_pairs,
            random_init=baselines.get("random_init"),
            raw_pixels=config.eval.baselines,
        )


def embed_to_file(run: LoadedRun, source: str, out: Path, batch_size: int = 512) -> dict[str, Any]:
    """Write backbone features of every image of ``source`` to ``out`` (.npy), streaming.

    Built-in sets are embedded train split then test split. A folder is decoded in batches
    by worker processes and written row by row into a memory-mapped file, so memory does
    not grow with the number of images; unreadable files are skipped, and ``<out>.files.txt``
    names the file of each row. A shard directory is streamed the same way, in index order
    (both splits), each row named ``SHARD#KEY``.
    """
    config, method, device = run.config, run.method, run.device
    view_maker = ImageModality().build_view_maker(config)
    channels_last = uses_convolutions(method)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    out.parent.mkdir(parents=True, exist_ok=True)
    blank = torch.zeros(2, config.data.channels, config.data.size, config.data.size, dtype=torch.uint8, device=device)
    dim = method.embed(view_maker.eval_view(blank)).shape[1]

    if source in BUILTIN_SOURCES:
        _, train, test = load_splits(source, config.data.channels, config.data.size, **decoding(config))
        features = torch.cat([encode(method.embed, s.images, view_maker, device, channels_last, batch_size) for s in (train, test)])
        np.save(out, features.numpy())
        return {"rows": len(features), "dim": dim, "skipped": 0, "out": str(out)}

    if not Path(source).is_dir():
        raise DataError(f"data source {source!r} is neither {', '.join(BUILTIN_SOURCES)} nor a folder")
    if is_shard_dir(source):
        return _embed_shards(method, view_maker, channels_last, inspect_source(source), config, device, out, dim, batch_size)
    paths, _ = scan_folder(source)
    rows = np.lib.format.open_memmap(out.with_suffix(".partial.npy"), mode="w+", dtype=np.float32, shape=(len(paths), dim))
    written, skipped, warned, names = 0, [], [], []
    for batch in iter_folder_batches(source, config.data.channels, config.data.size, batch_size, config.data.workers,
                                     **decoding(config)):
        skipped += batch.skipped
        warned += batch.warned
        if len(batch.images):
            features = encode(method.embed, batch.images, view_maker, device, channels_last, batch_size)
            rows[written : written + len(features)] = features.numpy()
            names += [str(paths[i]) for i in batch.indices.tolist()]
            written += len(features)
    if warned:
        say(describe_warnings(warned))
    return _finish_embedding(rows, out, written, dim, names, skipped)


def reconstruct_to_file(run: LoadedRun, out: Path, count: int = 12, seed: int = 0) -> dict[str, Any]:
    """Draw ``count`` held-out images, their masked inputs and a masked autoencoder's
    reconstructions (masks drawn from ``seed``) into ``out`` (PNG)."""
    method, config = run.method, run.config
    if not method.reconstructs_pixels:
        raise ConfigError(f"{run.run_dir}: method {config.method['name']} does not reconstruct pixels; selfsup reconstruct "
                          "takes masked-autoencoder runs (method.name=mae)")
    if count < 1:
        raise ConfigError(f"count must be at least 1, got {count}")
    _, _, test = ImageModality().load_data(config, run.run_dir)
    if not len(test):
        raise DataError(f"{config.data.source} has no held-out images to reconstruct")
    rows = torch.linspace(0, len(test) - 1, min(count, len(test))).round().long()
    view_maker = ImageModality().build_view_maker(config)
    views = view_maker.eval_view(test.images[rows].to(run.device))
    with torch.no_grad():
        masked, reconstructed = method.reconstruct(views, seeded_generator(seed, 0, run.device))
    save_png(reconstruction_grid(views, masked, reconstructed, config.augment.mean, config.augment.std), out)
    return {"images": len(rows), "source": test.name, "out": str(out)}


def _embed_shards(method: Method, view_maker: ViewMaker, channels_last: bool, info: SourceInfo, config: Config,
                  device: torch.device, out: Path, dim: int, batch_size: int) -> dict[str, Any]:
    """Every image of a shard directory (both splits), streamed in index order."""
    stream = open_stream(info, config.data.channels, config.data.size, config.data.workers, pretrain_only=False, **decoding(config))
    rows = np.lib.format.open_memmap(out.with_suffix(".partial.npy"), mode="w+", dtype=np.float32, shape=(len(stream), dim))
    written, skipped, names = 0, [], []
    for found in stream.batches(batch=batch_size, description="embedding"):
        keep = found.readable
        skipped += found.skipped
        if keep.any():
            features = encode(method.embed, found.images[keep], view_maker, device, channels_last, batch_size)
            rows[written : written + len(features)] = features.numpy()
            names += [name for name, good in zip(found.names, keep.tolist(), strict=True) if good]
            written += len(features)
    return _finish_embedding(rows, out, written, dim, names, skipped)


def _finish_embedding(rows: np.memmap, out: Path, written: int, dim: int, names: list[str],
                      skipped: list[tuple[str, str]]) -> dict[str, Any]:
    """Close the streamed ``.partial.npy``, keep its ``written`` rows as ``out``, name each row
    in ``<out>.files.txt`` and the unreadable inputs in ``<out>.skipped.txt``."""
    rows.flush()
    del rows
    _finish_memmap(out.with_suffix(".partial.npy"), out, written, dim)
    write_atomic(out.with_name(out.name + ".files.txt"), "".join(name + "\n" for name in names))
    if skipped:
        write_atomic(out.with_name(out.name + ".skipped.txt"), describe_skipped(skipped))
    return {"rows": written, "dim": dim, "skipped": len(skipped), "out": str(out)}


def _finish_memmap(partial: Path, out: Path, rows: int, dim: int, chunk: int = 65536) -> None:
    """Move the first ``rows`` rows of ``partial`` into ``out`` (shorter when files were skipped)."""
    source = np.load(partial, mmap_mode="r")
    if rows == len(source):
        del source
        os.replace(partial, out)
        return
    target = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(rows, dim))
    for start in range(0, rows, chunk):
        target[start : start + chunk] = source[start : min(rows, start + chunk)]
    target.flush()
    del target, source
    partial.unlink()
