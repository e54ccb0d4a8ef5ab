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

from selfsup.augment.views import RECIPES, ViewMaker
from selfsup.backbones import BACKBONES, build_backbone, uses_convolutions
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
from selfsup.evaluate.pipeline import encode, evaluate_method
from selfsup.files import write_atomic
from selfsup.methods import Method, method_class
from selfsup.modalities.base import LoadedRun, Modality, say


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

    def load_data(self, config: Config, run_dir: Path) -> tuple[ImageSet, ImageSet, ImageSet]:
        return load_splits(config.data.source, config.data.channels, config.data.size, config.data.workers, **decoding(config))

    def resolve(self, config: Config, pretrain_set: ImageSet) -> Config:
        """The augmentation recipe (the method's unless set), its crop sizes and the
        normalisation measured on the data; the stored image shape."""
        recipe_name = config.augment.recipe or method_class(config.method["name"]).default_recipe
        if recipe_name not in RECIPES:
            raise ConfigError(f"augment.recipe: unknown recipe {recipe_name!r}; available: {', '.join(RECIPES)}")
        recipe = RECIPES[recipe_name]
        mean, std = config.augment.mean, config.augment.std
        if mean is None or std is None:
            measured_mean, measured_std = channel_statistics(pretrain_set.images)
            mean = mean or measured_mean
            std = std or measured_std
        global_size = config.augment.global_size or pretrain_set.images.shape[-1]
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
        return dataclasses.replace(config, augment=augment, data=data)

    def build_view_maker(self, config: Config) -> ViewMaker:
        augment = config.augment
        recipe = dataclasses.replace(
            RECIPES[augment.recipe],
            global_size=augment.global_size,
            global_scale=augment.global_scale,
            local_crops=augment.local_crops,
            local_size=augment.local_size or default_local_size(augment.global_size),
        )
        return ViewMaker(recipe, augment.mean, augment.std)

    def build_backbone(self, config: Config, method: type[Method]) -> tuple[nn.Module, int, dict[str, Any]]:
        backbone, dim = build_backbone(config.backbone.name, config.data.channels, config.backbone.width, config.data.size,
                                       config.backbone.pool)
        return backbone, dim, {}

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
    names the file of each row.
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
    rows.flush()
    del rows
    _finish_memmap(out.with_suffix(".partial.npy"), out, written, dim)
    write_atomic(out.with_name(out.name + ".files.txt"), "".join(name + "\n" for name in names))
    if skipped:
        write_atomic(out.with_name(out.name + ".skipped.txt"), describe_skipped(skipped))
    if warned:
        say(describe_warnings(warned))
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
