"""Pictures of masked-image reconstructions (MAE, He et al. 2022, Figures 2-4): what the
encoder saw, what the decoder filled in, beside the image. Write one with
:func:`selfsup.report.frames.save_png`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from selfsup.report.grids import GAP, MIN_CELL, _cell, _to_uint8


def reconstruction_grid(images: torch.Tensor, masked: torch.Tensor, reconstructed: torch.Tensor, mean: Sequence[float],
                        std: Sequence[float]) -> Image.Image:
    """One column per image, three rows: the image, the masked input, the reconstruction.

    ``images`` [N, C, H, W]: the stored images (uint8, drawn as they are) or the views given
    to the method (float, normalised with ``mean`` and ``std``, per channel in [0, 1] units);
    ``masked`` and ``reconstructed`` [N, C, h, w], normalised floats as
    :meth:`selfsup.methods.mae.MAE.reconstruct` returns them. Floats are mapped back with
    ``mean`` and ``std`` and clipped to the displayable range; one channel is drawn grey.
    Every cell is ``max(64, W)`` px wide (nearest-neighbour scaling, so that patches stay
    sharp); a wider gap sets the image row apart from the two rows the model produced.
    """
    if not len(images) == len(masked) == len(reconstructed):
        raise ValueError(f"reconstruction_grid: {len(images)} images, {len(masked)} masked and {len(reconstructed)} reconstructed")
    side = max(MIN_CELL, images.shape[-1])
    rows = [_to_uint8(images.detach().cpu(), mean, std)]
    rows += [_to_uint8(picture.detach().cpu(), mean, std) for picture in (masked, reconstructed)]
    columns = len(images)
    canvas = Image.new("RGB", (columns * (side + GAP) + GAP, len(rows) * (side + GAP) + GAP * 3), "white")
    for row, pictures in enumerate(rows):
        top = GAP + row * (side + GAP) + (2 * GAP if row else 0)
        for column, picture in enumerate(pictures):
            canvas.paste(_cell(picture, side), (GAP + column * (side + GAP), top))
    return canvas
