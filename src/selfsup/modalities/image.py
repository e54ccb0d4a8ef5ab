"""Images: Fashion-MNIST, digits or a folder; augmented views; kNN, linear and few-shot
probes, energy AUC and collapse, beside raw pixels and the backbone at random init."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from selfsup.augment.views import RECIPES, ViewMaker
from selfsup.backbones import build_backbone
from selfsup.config import Config, ConfigError
from selfsup.data import ImageSet, default_source, load_splits
from selfsup.evaluate.pipeline import evaluate_method
from selfsup.methods import Method, build_method, method_class, resolve_method_options
from selfsup.modalities.base import Modality, say

DEFAULT_BACKBONE = "convnet-small"


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

    def resolve_source(self, config: Config) -> str:
        """Fashion-MNIST, falling back to digits with a message when it is not installed."""
        source = default_source()
        if source != "fashion-mnist":
            say("Fashion-MNIST is not installed (apt-get install -y dataset-fashion-mnist); using the bundled 8x8 digits")
        return source

    def load_data(self, config: Config, run_dir: Path) -> tuple[ImageSet, ImageSet, ImageSet]:
        return load_splits(config.data.source, config.data.channels, config.data.size, config.data.workers)

    def resolve(self, config: Config, pretrain_set: ImageSet) -> Config:
        method_options = resolve_method_options(config.method)
        cls = method_class(method_options["name"])
        method_options = cls.fit_options(method_options, len(pretrain_set))
        recipe_name = config.augment.recipe or cls.default_recipe
        if recipe_name not in RECIPES:
            raise ConfigError(f"augment.recipe: unknown recipe {recipe_name!r}; available: {', '.join(RECIPES)}")
        recipe = RECIPES[recipe_name]
        mean, std = config.augment.mean, config.augment.std
        if mean is None or std is None:
            measured_mean, measured_std = channel_statistics(pretrain_set.images)
            mean = mean or measured_mean
            std = std or measured_std
        global_size = config.augment.global_size or pretrain_set.images.shape[-1]
        augment = dataclasses.replace(
            config.augment,
            recipe=recipe_name,
            global_size=global_size,
            local_size=config.augment.local_size or default_local_size(global_size),
            global_scale=config.augment.global_scale or recipe.global_scale,
            local_crops=recipe.local_crops if config.augment.local_crops is None else config.augment.local_crops,
            mean=tuple(mean),
            std=tuple(std),
        )
        for name, value in (("mean", augment.mean), ("std", augment.std)):
            if len(value) != pretrain_set.channels:
                raise ConfigError(f"augment.{name} has {len(value)} values but the images have {pretrain_set.channels} channels")
        data = dataclasses.replace(config.data, channels=pretrain_set.channels, size=pretrain_set.height)
        backbone = dataclasses.replace(config.backbone, name=config.backbone.name or DEFAULT_BACKBONE)
        return dataclasses.replace(config, method=method_options, augment=augment, data=data, backbone=backbone)

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

    def build_model(self, config: Config) -> Method:
        torch.manual_seed(config.train.seed)
        backbone, dim = build_backbone(config.backbone.name or DEFAULT_BACKBONE, config.data.channels, config.backbone.width)
        return build_method(config.method, backbone, dim)

    def evaluate(self, method: Method, view_maker: ViewMaker, config: Config, train: ImageSet, test: ImageSet,
                 device: torch.device, run_dir: Path, baselines: dict[str, Method]) -> dict:
        say("evaluating: kNN, linear probe, few-shot, energy AUC, collapse, baselines")
        return evaluate_method(
            method, view_maker, train, test, device,
            fewshot_seeds=config.eval.fewshot_seeds,
            energy_images=config.eval.energy_pairs,
            random_init=self.build_model(config) if config.eval.baselines else None,
            raw_pixels=config.eval.baselines,
        )
