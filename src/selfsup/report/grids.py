"""Grids of images for a person to look at: the samples as the model will see them, and their
augmented views (what `selfsup show` draws)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

# Cells are drawn at least this many pixels wide, so that 8-28 px images are visible.
MIN_CELL = 64
GAP = 2


def _to_uint8(images: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:
    """[N, C, H, W] as displayable uint8 RGB: normalised views are mapped back with ``mean``
    and ``std``; one channel is repeated into three."""
    if images.dtype != torch.uint8:
        images = images.float()
        if mean is not None and std is not None:
            shape = (1, -1, 1, 1)
            images = images * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)
            images = images * 255
        images = images.clamp(0, 255).round().to(torch.uint8)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _cell(image: torch.Tensor, side: int) -> Image.Image:
    """One [3, H, W] uint8 image scaled (nearest, so pixels stay sharp) to fit ``side``."""
    height, width = image.shape[-2:]
    scale = side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    resized = F.interpolate(image[None].float(), size=size, mode="nearest")[0].to(torch.uint8)
    return Image.fromarray(resized.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


def sample_grid(images: torch.Tensor, labels: Sequence[str] | None = None, columns: int | None = None) -> Image.Image:
    """``images`` [N, C, H, W] uint8 in a near-square grid, each captioned with its label."""
    count = len(images)
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / columns)
    side = max(MIN_CELL, images.shape[-1])
    caption = 12 if labels else 0
    canvas = Image.new("RGB", (columns * (side + GAP) + GAP, rows * (side + caption + GAP) + GAP), "white")
    draw = ImageDraw.Draw(canvas)
    for index, image in enumerate(_to_uint8(images)):
        left = GAP + (index % columns) * (side + GAP)
        top = GAP + (index // columns) * (side + caption + GAP)
        canvas.paste(_cell(image, side), (left, top))
        if labels:
            draw.text((left + 1, top + side), str(labels[index])[:12], fill="black")
    return canvas


def views_grid(images: torch.Tensor, views: list[torch.Tensor], mean: Sequence[float], std: Sequence[float]) -> Image.Image:
    """One row per image: the image as stored, then each of its ``views`` (normalised float
    [N, C, h, w] each, global crops first), drawn at one cell size so that a local crop's
    smaller field of view shows as such."""
    side = max(MIN_CELL, images.shape[-1])
    columns = 1 + len(views)
    canvas = Image.new("RGB", (columns * (side + GAP) + GAP * 3, len(images) * (side + GAP) + GAP), "white")
    stored = _to_uint8(images)
    shown = [_to_uint8(view.detach().cpu(), mean, std) for view in views]
    for row in range(len(images)):
        top = GAP + row * (side + GAP)
        canvas.paste(_cell(stored[row], side), (GAP, top))
        for column, view in enumerate(shown, start=1):
            # A gap after the stored image sets it apart from its views.
            canvas.paste(_cell(view[row], side), (GAP * 3 + column * (side + GAP), top))
    return canvas
