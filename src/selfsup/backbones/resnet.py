"""ResNets (He et al. 2016) with an ImageNet stem or a small-image stem.

The ImageNet stem is a 7x7 stride-2 convolution and a 3x3 max-pool (224 px inputs).
The small-image stem is one 3x3 stride-1 convolution with no pooling, as in the CIFAR
variants used by SimCLR's CIFAR-10 experiments and solo-learn, for 28-64 px images.
The classifier is removed: ``forward`` returns the globally pooled features [B, D].
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = _shortcut(in_channels, channels, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        # Stride on the 3x3 convolution (ResNet v1.5, as torchvision).
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class ResNet(nn.Module):
    """ResNet trunk returning pooled features of dimension ``output_dim``.

    Args:
        block: BasicBlock or Bottleneck.
        layers: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
        in_channels: image channels (1 for Fashion-MNIST, 3 for RGB).
        small_images: use the 3x3 stride-1 stem without max-pool.
        width: channels of the first stage (64 in the paper); later stages double it.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, ...],
        in_channels: int = 3,
        small_images: bool = False,
        width: int = 64,
    ):
        super().__init__()
        if small_images:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        stages = []
        channels_in = width
        for index, blocks in enumerate(layers):
            channels = width * 2**index
            stride = 1 if index == 0 else 2
            stage = []
            for block_index in range(blocks):
                stage.append(block(channels_in, channels, stride if block_index == 0 else 1))
                channels_in = channels * block.expansion
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.output_dim = channels_in
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)


def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions; the last BN of each residual branch starts at zero
    (Goyal et al. 2017), so each block starts as the identity."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, Bottleneck):
            nn.init.zeros_(module.bn3.weight)
        elif isinstance(module, BasicBlock):
            nn.init.zeros_(module.bn2.weight)


def resnet18(in_channels: int = 3, small_images: bool = False, width: int = 64) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), in_channels, small_images, width)


def resnet34(in_channels: int = 3, small_images: bool = False, width: int = 64) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), in_channels, small_images, width)


def resnet50(in_channels: int = 3, small_images: bool = False, width: int = 64) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), in_channels, small_images, width)
