"""Backbones by name. Any nn.Module mapping images to [B, D] works; these are the built-ins,
and ``module.path:callable`` builds a user's (torchvision's or timm's where they run).

The registry holds image backbones (built from in_channels and width); the text encoder
(``TransformerEncoder``, token ids -> [B, T, D]) is built directly by text methods.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from selfsup.backbones.convnet import POOLS as CONVNET_POOLS
from selfsup.backbones.convnet import ConvNet
from selfsup.backbones.regnet import REGNETY, RegNetY, YBlock
from selfsup.backbones.resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50
from selfsup.backbones.text import TransformerEncoder
from selfsup.backbones.transformer import Block
from selfsup.backbones.vit import POOLS as VIT_POOLS
from selfsup.backbones.vit import VIT_SIZES, VisionTransformer
from selfsup.config import ConfigError


@dataclass(frozen=True)
class BackboneSpec:
    # (in_channels, width, image_size, pool) -> a module with .output_dim; pool None is the
    # layout of runs from before backbone.pool applied to the backbone
    build: Callable[[int, int | None, int, str | None], nn.Module]
    default_width: int | None  # None: the design fixes the widths (backbone.width does not apply)
    description: str
    pools: tuple[str, ...] = ()  # the values backbone.pool takes, a new run's default first; () = none applies
    patch: int | None = None  # a vision transformer's patch side: no crop may be smaller


def _resnet(factory: Callable[..., ResNet], small_images: bool) -> Callable[..., nn.Module]:
    return lambda in_channels, width, image_size, pool: factory(in_channels, small_images, width)


BACKBONES: dict[str, BackboneSpec] = {
    "convnet-small": BackboneSpec(lambda c, w, size, pool: ConvNet(c, w, pool=pool or "mean"), 64,
                                  "VGG-style convnet, stride-2 stem: the fast CPU default for 28-32 px", pools=CONVNET_POOLS),
}
for _depth, _factory in (("18", resnet18), ("34", resnet34), ("50", resnet50)):
    BACKBONES[f"resnet{_depth}"] = BackboneSpec(_resnet(_factory, False), 64, f"ResNet-{_depth}, ImageNet stem (7x7/2 + max-pool)")
    BACKBONES[f"resnet{_depth}-small"] = BackboneSpec(_resnet(_factory, True), 64, f"ResNet-{_depth}, small-image stem (3x3/1, no pool) for 28-64 px")
for _name, _params in REGNETY.items():
    for _small in (False, True):
        BACKBONES[f"regnety-{_name}" + ("-small" if _small else "")] = BackboneSpec(
            lambda c, w, size, pool, params=_params, small=_small: RegNetY(params, c, small), None,
            f"RegNetY-{_name.upper()}, " + ("small-image stem (3x3/1) for 28-64 px" if _small else "ImageNet stem (3x3/2)"),
        )


for _name, _size in VIT_SIZES.items():
    for _patch in (16, 4):
        BACKBONES[f"vit-{_name}" + ("-small" if _patch == 4 else "")] = BackboneSpec(
            lambda c, w, size, pool, vit_size=_size, patch=_patch: VisionTransformer(vit_size, c, size, patch, pool or "cls"), None,
            f"ViT-{_name.capitalize()}, {_patch} px patches" + (" for 28-64 px images" if _patch == 4 else ""), pools=VIT_POOLS,
            patch=_patch,
        )


# The repeated residual blocks of the built-in backbones: the unit that FSDP shards (one
# all-gather per block) and that activation checkpointing recomputes.
BLOCK_TYPES = (YBlock, BasicBlock, Bottleneck, Block)


def blocks(module: nn.Module) -> list[nn.Module]:
    """The residual blocks inside ``module`` (its backbones' and any copy's, such as an EMA
    teacher's), outermost first; none in a user's backbone."""
    return [m for m in module.modules() if isinstance(m, BLOCK_TYPES)]


def design_size(name: str) -> int:
    """The image side a backbone is made for: 32 px for the convnet and the small-image
    (``-small``) variants (28-64 px data), 224 px for ImageNet stems and patches, 32 px for
    a user's module (its needs are unknown; data.size says otherwise)."""
    return 224 if name in BACKBONES and not (name.endswith("-small") or name.startswith("convnet")) else 32


def uses_convolutions(module: nn.Module) -> bool:
    """Whether ``module`` has 2-d convolutions, which run faster on channels-last tensors
    (oneDNN on CPUs, cuDNN with tensor cores): the trainer and evaluation convert then."""
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def build_backbone(name: str, in_channels: int, width: int | None = None, image_size: int = 32,
                   pool: str | None = None) -> tuple[nn.Module, int]:
    """Build a registered backbone, or ``module.path:callable`` (called with no arguments);
    returns (module, feature dimension D)."""
    if ":" in name:
        return _user_backbone(name, in_channels, image_size)
    try:
        spec = BACKBONES[name]
    except KeyError:
        raise ConfigError(f"backbone.name: unknown backbone {name!r}; available: {', '.join(BACKBONES)}") from None
    if width is not None and width < 1:
        raise ConfigError(f"backbone.width must be a positive integer, got {width}")
    if width is not None and spec.default_width is None:
        raise ConfigError(f"backbone.width does not apply to {name}: its widths are the design's")
    if pool is not None and not spec.pools:
        raise ConfigError(f"backbone.pool applies to convnet-small and the vision transformers, not to {name}")
    if pool is not None and pool not in spec.pools:
        raise ConfigError(f"backbone.pool: {pool!r} is not one of {', '.join(spec.pools)} for {name}")
    module = spec.build(in_channels, width or spec.default_width, image_size, pool)
    return module, module.output_dim


def new_run_pool(name: str, pool: str | None, preferred: str | None = None) -> str | None:
    """``backbone.pool`` of a new run: ``pool`` when set, else ``preferred`` (the method's
    ``default_pool``: MAE's mean of patches) where the backbone offers it, else the
    backbone's default; None for a backbone without a choice (``build_backbone`` checks)."""
    spec = BACKBONES.get(name)
    if pool is not None or spec is None or not spec.pools:
        return pool
    return preferred if preferred in spec.pools else spec.pools[0]


def _user_backbone(name: str, in_channels: int, image_size: int) -> tuple[nn.Module, int]:
    """A user's module: its feature size read off one forward pass on the meta device
    (no memory, no compute)."""
    module_path, _, attribute = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_path), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"backbone.name: cannot import {name!r}: {error}") from None
    module = factory()
    if not isinstance(module, nn.Module):
        raise ConfigError(f"backbone.name: {name!r} returned a {type(module).__name__}, not a torch.nn.Module")
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    try:
        shape = torch.func.functional_call(
            module, {key: value.to("meta") for key, value in tensors.items()},
            (torch.empty(2, in_channels, image_size, image_size, device="meta"),),
        ).shape
    except Exception as error:  # any failure of the user's forward pass on this input
        raise ConfigError(f"backbone.name: {name!r} cannot read [B, {in_channels}, {image_size}, {image_size}] images: {error}") from None
    if len(shape) != 2:
        raise ConfigError(f"backbone.name: {name!r} must map images to [B, D] features, it gives {list(shape)}")
    return module, shape[1]


__all__ = [
    "BACKBONES", "BLOCK_TYPES", "BackboneSpec", "ConvNet", "REGNETY", "RegNetY", "ResNet", "TransformerEncoder",
    "VisionTransformer", "blocks", "build_backbone", "design_size", "resnet18", "resnet34", "resnet50", "uses_convolutions",
]
