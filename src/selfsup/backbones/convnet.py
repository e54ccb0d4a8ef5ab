"""A small, fast convolutional network for 28-32 px images on a CPU."""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


# How the last feature map becomes the features: "grid" averages each quarter of the map (a
# 2 x 2 grid of overlapping cells when the side is odd, as adaptive pooling cuts them) and
# concatenates the four, [B, 4C]; "mean" averages the whole map, [B, C].
POOLS = ("grid", "mean")
GRID_SIDE = 2


class ConvNet(nn.Module):
    """VGG-style trunk: a stride-2 stem, then stages of two 3x3 conv-BN-ReLU layers, each
    stage after the first halving the resolution and doubling the width; the last map is
    pooled to [B, output_dim] (``pool``, see :data:`POOLS`).

    The stride-2 stem is what makes it fast on a CPU: at 28 px it quarters the cost of every
    later layer while keeping 14 x 14 feature maps, enough for 28 px objects (measured in
    benchmarks/throughput.py, which chose it as the CPU default).

    Pooling to a 2 x 2 grid keeps where in the image a feature fired, which one global mean
    loses; the probes read it better (BENCHMARKS.md "Reading the convnet's last map": after 15
    minutes of SimCLR on Fashion-MNIST, linear 84.1 -> 87.3, 100-shot 76.4 -> 80.1, the same
    encoder read both ways), as the linear benchmarks of convolutional layers pool each map to a
    few thousand features rather than one vector per channel (Goyal et al. 2019, "Scaling and
    Benchmarking Self-Supervised Visual Representation Learning"). "mean" is the layout of
    runs from before ``backbone.pool`` applied to the convnet.
    """

    def __init__(self, in_channels: int = 3, width: int = 64, stages: int = 3, pool: str = "mean"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
        layers: list[nn.Module] = [_conv_bn_relu(in_channels, width, stride=2)]
        channels = width
        for index in range(stages):
            out_channels = width * 2**index
            layers.append(_conv_bn_relu(channels, out_channels, stride=1 if index == 0 else 2))
            layers.append(_conv_bn_relu(out_channels, out_channels))
            channels = out_channels
        self.features = nn.Sequential(*layers)
        side = GRID_SIDE if pool == "grid" else 1
        self.pool = nn.AdaptiveAvgPool2d(side)
        self.output_dim = channels * side * side
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)
