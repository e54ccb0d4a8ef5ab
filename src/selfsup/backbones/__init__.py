"""Backbones by name. Any nn.Module mapping images to [B, D] works; these are the built-ins.

The registry holds image backbones (built from in_channels and width); the text encoder
(``TransformerEncoder``, token ids -> [B, T, D]) is built directly by text methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from selfsup.backbones.convnet import ConvNet
from selfsup.backbones.resnet import ResNet, resnet18, resnet34, resnet50
from selfsup.backbones.text import TransformerEncoder
from selfsup.config import ConfigError


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[[int, int], nn.Module]  # (in_channels, width) -> module with .output_dim
    default_width: int
    description: str


def _resnet(factory: Callable[..., ResNet], small_images: bool) -> Callable[[int, int], nn.Module]:
    return lambda in_channels, width: factory(in_channels, small_images, width)


BACKBONES: dict[str, BackboneSpec] = {
    "convnet-small": BackboneSpec(lambda c, w: ConvNet(c, w), 64, "VGG-style convnet, stride-2 stem: the fast CPU default for 28-32 px"),
}
for _depth, _factory in (("18", resnet18), ("34", resnet34), ("50", resnet50)):
    BACKBONES[f"resnet{_depth}"] = BackboneSpec(_resnet(_factory, False), 64, f"ResNet-{_depth}, ImageNet stem (7x7/2 + max-pool)")
    BACKBONES[f"resnet{_depth}-small"] = BackboneSpec(_resnet(_factory, True), 64, f"ResNet-{_depth}, small-image stem (3x3/1, no pool) for 28-64 px")


def uses_convolutions(module: nn.Module) -> bool:
    """Whether ``module`` has 2-d convolutions, which run faster on channels-last tensors
    (oneDNN on CPUs, cuDNN with tensor cores): the trainer and evaluation convert then."""
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def build_backbone(name: str, in_channels: int, width: int | None = None) -> tuple[nn.Module, int]:
    """Build a registered backbone; returns (module, feature dimension D)."""
    try:
        spec = BACKBONES[name]
    except KeyError:
        raise ConfigError(f"backbone.name: unknown backbone {name!r}; available: {', '.join(BACKBONES)}") from None
    if width is not None and width < 1:
        raise ConfigError(f"backbone.width must be a positive integer, got {width}")
    module = spec.build(in_channels, width or spec.default_width)
    return module, module.output_dim


__all__ = ["BACKBONES", "BackboneSpec", "ConvNet", "ResNet", "TransformerEncoder", "build_backbone", "resnet18", "resnet34", "resnet50", "uses_convolutions"]
