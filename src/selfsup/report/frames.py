"""Pictures of predicted futures: one PNG that a person can read at a glance."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfsup.files import write_atomic

_GAP = 2  # pixels between frames
_BLOCK_GAP = 8  # pixels between clips
_SEPARATOR = 96  # grey of the gaps (frames are white sprites on black)


def futures_grid(past: torch.Tensor, future: torch.Tensor, samples: torch.Tensor, scale: int = 2) -> Image.Image:
    """A grid image of clips and their sampled futures.

    ``past`` [N, Tin, 1, H, W], ``future`` [N, Tout, 1, H, W] and ``samples`` [N, K, Tout,
    1, H, W], floats in [0, 1]. Each clip is a block of rows: first the past followed by the
    true future, then one row per sample with the past's place left blank, so every future
    frame sits under the true one it predicts. Blocks are stacked top to bottom; pixels are
    magnified ``scale`` times.
    """
    count, frames_in = past.shape[:2]
    samples_per_clip, frames_out = samples.shape[1:3]
    height, width = past.shape[-2:]
    columns = frames_in + frames_out
    rows_per_block = 1 + samples_per_clip
    grid_height = count * rows_per_block * (height + _GAP) + (count - 1) * _BLOCK_GAP
    grid = np.full((grid_height, columns * (width + _GAP) + _GAP, 1), _SEPARATOR, dtype=np.uint8)

    def paste(frame: torch.Tensor, row: int, column: int) -> None:
        pixels = (frame.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        top, left = row, _GAP + column * (width + _GAP)
        grid[top : top + height, left : left + width] = pixels

    for clip in range(count):
        top = clip * (rows_per_block * (height + _GAP) + _BLOCK_GAP)
        for t in range(frames_in):
            paste(past[clip, t], top, t)
        for t in range(frames_out):
            paste(future[clip, t], top, frames_in + t)
        for k in range(samples_per_clip):
            for t in range(frames_out):
                paste(samples[clip, k, t], top + (1 + k) * (height + _GAP), frames_in + t)
    image = Image.fromarray(grid[:, :, 0], mode="L")
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image


def save_png(image: Image.Image, path: Path) -> Path:
    """Write ``image`` to ``path`` as a PNG, atomically."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return write_atomic(path, buffer.getvalue())
