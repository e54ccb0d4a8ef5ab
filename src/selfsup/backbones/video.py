"""Convolutional encoders and decoders for frame sequences (moving sprites, small videos).

Unlike the image backbones, which pool globally, these keep *where* things are: a future
frame depends on a sprite's position, so the trunk's last feature map is flattened, not
averaged. GroupNorm (not BatchNorm) keeps every sample's output independent of the rest
of the batch, in training and evaluation alike: an energy F(x, y) or a latent inferred for
one clip must not depend on which clips share its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_STRIDES = 3  # three stride-2 stages: 48 px frames -> 6 x 6 feature maps


@dataclass(frozen=True)
class ClipShape:
    """What a video model is built for: ``frames_in`` past frames (the input x) and
    ``frames_out`` future frames (the continuation y), each ``channels`` x ``size`` x ``size``."""

    frames_in: int
    frames_out: int
    channels: int = 1
    size: int = 48


def _conv_block(in_channels: int, out_channels: int, transposed: bool = False) -> nn.Sequential:
    conv = (
        nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)
        if transposed
        else nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
    )
    return nn.Sequential(conv, nn.GroupNorm(min(8, out_channels), out_channels), nn.ReLU(inplace=True))


def _check_size(size: int) -> None:
    if size % 2**_STRIDES:
        raise ValueError(f"frame size {size} must be divisible by {2**_STRIDES} (three stride-2 stages)")


class SpatialEncoder(nn.Module):
    """Images [N, C, H, W] -> [N, dim]: three stride-2 conv stages (width, 2 width, 4 width)
    and a linear map of the flattened H/8 x W/8 feature map (position is kept)."""

    def __init__(self, in_channels: int, size: int, width: int = 32, dim: int = 128):
        super().__init__()
        _check_size(size)
        self.trunk = nn.Sequential(
            _conv_block(in_channels, width), _conv_block(width, 2 * width), _conv_block(2 * width, 4 * width)
        )
        self.project = nn.Linear(4 * width * (size // 2**_STRIDES) ** 2, dim)
        self.output_dim = dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.trunk(images).flatten(1))


class FrameEncoder(nn.Module):
    """Each frame on its own: frames [B, T, C, H, W] -> per-frame embeddings [B, T, dim]."""

    def __init__(self, channels: int = 1, size: int = 48, width: int = 32, dim: int = 128):
        super().__init__()
        self.frame = SpatialEncoder(channels, size, width, dim)
        self.output_dim = dim

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        batch, length = frames.shape[:2]
        return self.frame(frames.flatten(0, 1)).view(batch, length, -1)

    def clip_embedding(self, frames: torch.Tensor) -> torch.Tensor:
        """One vector per clip [B, dim]: the mean of its frames' embeddings (the features
        probes and kNN read)."""
        return self(frames).mean(dim=1)


class StackEncoder(nn.Module):
    """A clip as one image with its frames as channels: [B, T, C, H, W] -> [B, dim]. Cheaper
    than :class:`FrameEncoder` (one pass per clip) and sees motion directly; used for the
    amortised latent guess and the discriminator."""

    def __init__(self, frames: int, channels: int = 1, size: int = 48, width: int = 32, dim: int = 128):
        super().__init__()
        self.stack = SpatialEncoder(frames * channels, size, width, dim)
        self.output_dim = dim

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.stack(frames.flatten(1, 2))


class FrameDecoder(nn.Module):
    """A vector [B, in_dim] -> ``frames`` frames [B, frames, C, size, size] in [0, 1]: a
    linear map to a 4 width x size/8 x size/8 map, three stride-2 transposed convolutions
    (the mirror of :class:`SpatialEncoder`), a sigmoid.

    With ``context_channels`` > 0 the decoder also reads a context image [B, context_channels,
    size, size] (e.g. the last past frames) through a U-Net's skip connections (Ronneberger
    et al. 2015): a convolutional trunk encodes it at size/2, /4 and /8, and each upsampling
    stage sees those features beside its own. Appearance can then be copied from the
    context, and the vector only has to say where it goes.
    """

    def __init__(self, in_dim: int, frames: int, channels: int = 1, size: int = 48, width: int = 32, context_channels: int = 0):
        super().__init__()
        _check_size(size)
        self.frames, self.channels, self.size = frames, channels, size
        self.base = size // 2**_STRIDES
        self.expand = nn.Sequential(nn.Linear(in_dim, 4 * width * self.base**2), nn.ReLU(inplace=True))
        skip = (4 * width, 2 * width, width) if context_channels else (0, 0, 0)
        if context_channels:
            self.context = nn.ModuleList([
                _conv_block(context_channels, width), _conv_block(width, 2 * width), _conv_block(2 * width, 4 * width)
            ])
        self.up = nn.ModuleList([
            _conv_block(4 * width + skip[0], 2 * width, transposed=True),
            _conv_block(2 * width + skip[1], width, transposed=True),
            nn.ConvTranspose2d(width + skip[2], frames * channels, 4, stride=2, padding=1),
        ])

    def context_features(self, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The skip connections' features of a context image [B, context_channels, size, size],
        finest first; () without a context. They do not depend on the code, so a caller that
        decodes many codes against one context (latent inference, sampled futures) computes
        them once."""
        skips = []
        for stage in getattr(self, "context", ()):
            context = stage(context)
            skips.append(context)
        return tuple(skips)

    def forward(self, code: torch.Tensor, context: torch.Tensor | None = None,
                skips: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """Frames from ``code``, reading the context image or its :meth:`context_features`."""
        x = self.expand(code).view(len(code), -1, self.base, self.base)
        if skips is None and context is not None:
            skips = self.context_features(context)
        if skips:
            for stage, skip in zip(self.up, reversed(skips)):
                x = stage(torch.cat([x, skip], dim=1))
        else:
            for stage in self.up:
                x = stage(x)
        return torch.sigmoid(x).view(len(code), self.frames, self.channels, self.size, self.size)
