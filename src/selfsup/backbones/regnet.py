"""RegNetY: the RegNet design space with squeeze-and-excitation (Radosavovic, Kosaraju,
Girshick, He, Dollár, "Designing Network Design Spaces", CVPR 2020), the backbone of SEER
(Goyal et al. 2021).

A RegNet is four numbers and a group width: block j of ``depth`` blocks gets the width
u_j = w_0 + w_a j (eq. 2), quantised to w_0 w_m^round(log(u_j / w_0) / log(w_m)) and to a
multiple of 8 (eqs. 3-4); blocks of equal width form a stage, whose first block halves
the resolution. Each block is a residual bottleneck (bottleneck ratio 1): 1x1 conv, 3x3
grouped conv (``group_width`` channels a group), squeeze-and-excitation with a quarter of
the block's input width, 1x1 conv; a 1x1 projection on the shortcut where the shape
changes. Each stage width is then made a multiple of its group width, the nearest one
unless that loses more than 10% (torchvision's rule, whose published parameter counts
these models match; pycls rounds to the nearest, which makes RegNetY-8GF 0.2M smaller).
The stem is a 3x3/2 conv to 32 channels (ImageNet) or a 3x3/1 conv (the small-image
stem, for 28-64 px).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

STEM_WIDTH = 32
SE_RATIO = 0.25
_QUANTUM = 8


@dataclass(frozen=True)
class RegNetParams:
    """A RegNet of the design space: depth, initial width w_0, slope w_a, width multiplier w_m, group width."""

    depth: int
    w_0: int
    w_a: float
    w_m: float
    group_width: int

    def stages(self) -> list[tuple[int, int, int]]:
        """(width, depth, group width) of each stage, widths made compatible with their groups."""
        continuous = np.arange(self.depth) * self.w_a + self.w_0
        exponents = np.round(np.log(continuous / self.w_0) / np.log(self.w_m))
        widths = np.round(self.w_0 * np.power(self.w_m, exponents) / _QUANTUM).astype(int) * _QUANTUM
        stage_widths, stage_depths = np.unique(widths, return_counts=True)
        stages = []
        for width, depth in zip(stage_widths.tolist(), stage_depths.tolist()):
            group = min(self.group_width, width)
            stages.append((_multiple_of(width, group), depth, group))
        return stages


def _multiple_of(width: int, group: int) -> int:
    """The multiple of ``group`` nearest ``width``, rounded up where rounding would lose more
    than a tenth of it (torchvision's ``_make_divisible``)."""
    multiple = max(group, int(width + group / 2) // group * group)
    return multiple + group if multiple < 0.9 * width else multiple


# The published RegNetY models (pycls's dds_baselines; 64, 128 and 256 GF are SEER's, from
# the VISSL and torchvision configurations).
REGNETY: dict[str, RegNetParams] = {
    "200mf": RegNetParams(13, 24, 36.44, 2.49, 8),
    "400mf": RegNetParams(16, 48, 27.89, 2.09, 8),
    "600mf": RegNetParams(15, 48, 32.54, 2.32, 16),
    "800mf": RegNetParams(14, 56, 38.84, 2.4, 16),
    "1.6gf": RegNetParams(27, 48, 20.71, 2.65, 24),
    "3.2gf": RegNetParams(21, 80, 42.63, 2.66, 24),
    "4gf": RegNetParams(22, 96, 31.41, 2.24, 64),
    "6.4gf": RegNetParams(25, 112, 33.22, 2.27, 72),
    "8gf": RegNetParams(17, 192, 76.82, 2.19, 56),
    "12gf": RegNetParams(19, 168, 73.36, 2.37, 112),
    "16gf": RegNetParams(18, 200, 106.23, 2.48, 112),
    "32gf": RegNetParams(20, 232, 115.89, 2.53, 232),
    "64gf": RegNetParams(20, 352, 147.48, 2.4, 328),
    "128gf": RegNetParams(27, 456, 160.83, 2.52, 264),
    "256gf": RegNetParams(27, 640, 230.83, 2.53, 373),
}


def _conv_bn(w_in: int, w_out: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(w_in, w_out, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(w_out)]


class SqueezeExcitation(nn.Module):
    """x * sigmoid(W_2 relu(W_1 avgpool(x))) (Hu et al. 2018), with biases, as pycls's SE."""

    def __init__(self, width: int, squeezed: int):
        super().__init__()
        self.excite = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(width, squeezed, 1), nn.ReLU(inplace=True), nn.Conv2d(squeezed, width, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excite(x)


class YBlock(nn.Module):
    """relu(shortcut(x) + f(x)), f = 1x1, 3x3 grouped, SE, 1x1, each conv followed by BN."""

    def __init__(self, w_in: int, w_out: int, stride: int, group_width: int):
        super().__init__()
        self.f = nn.Sequential(
            *_conv_bn(w_in, w_out, 1), nn.ReLU(inplace=True),
            *_conv_bn(w_out, w_out, 3, stride, groups=w_out // group_width), nn.ReLU(inplace=True),
            SqueezeExcitation(w_out, int(round(w_in * SE_RATIO))),
            *_conv_bn(w_out, w_out, 1),
        )
        nn.init.zeros_(self.f[-1].weight)  # each block starts as the identity (Goyal et al. 2017)
        self.shortcut = nn.Sequential(*_conv_bn(w_in, w_out, 1, stride)) if (w_in != w_out or stride != 1) else nn.Identity()
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.shortcut(x) + self.f(x))


class RegNetY(nn.Module):
    """A RegNetY trunk mapping images [B, C, H, W] to pooled features [B, output_dim]."""

    def __init__(self, params: RegNetParams, in_channels: int = 3, small_images: bool = False):
        super().__init__()
        layers: list[nn.Module] = [*_conv_bn(in_channels, STEM_WIDTH, 3, 1 if small_images else 2), nn.ReLU(inplace=True)]
        width = STEM_WIDTH
        for stage_width, depth, group_width in params.stages():
            for index in range(depth):
                layers.append(YBlock(width, stage_width, 2 if index == 0 else 1, group_width))
                width = stage_width
        self.trunk = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.output_dim = width
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module.bias is None:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.trunk(images))
