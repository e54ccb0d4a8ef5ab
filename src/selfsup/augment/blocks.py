"""I-JEPA's multi-block masks over a grid of patches (Assran et al., "Self-Supervised Learning
from Images with a Joint-Embedding Predictive Architecture", CVPR 2023, sec. 3 and Fig. 4;
reference code facebookresearch/ijepa, ``src/masks/multiblock.py``, ``MaskCollator``).

Per image, ``targets`` (4) target blocks and one context block are cut from the h x w patch
grid:

* target blocks: scale s ~ U(0.15, 0.2) of the grid and aspect ratio r ~ U(0.75, 1.5);
  they may overlap one another;
* context block: scale ~ U(0.85, 1.0), aspect ratio 1, from which every patch of every
  target block is then removed, so that the context tells nothing of the targets.

A block of scale s and aspect ratio r keeps k = int(h w s) patches and is
round(sqrt(k r)) patches high and round(sqrt(k / r)) wide (the reference's
``_sample_block_size``, integer rounding included), at most the grid. As in the reference,
one block size is drawn per batch for the targets and one for the context (shared by all
images, so that the index tensors stack), and the positions per image. The context of an
image must keep more than ``min_keep`` patches (the reference's ``min_keep``, 10 in
``configs/in1k_vith14_ep300.yaml``): when none of ``tries`` (20) context positions does, the
last target block is no longer removed from the context, then the one before it, and so on
(the reference's ``acceptable_regions`` relaxation after each 20 failed tries). Every
image's context is finally trimmed to the smallest count in the batch, dropping its last
patches in raster order (the reference's ``collated_masks_enc = [cm[:min_keep_enc] ...]``).

Departures from the reference, each to follow the paper where the code narrows it:

* the scale and the aspect ratio of the target blocks are independent draws (the paper's
  two ranges; the reference derives both from one uniform number, so large blocks are
  always tall ones);
* a block may span the whole grid and lie anywhere on it (the reference keeps blocks at
  least one patch short of the grid and its ``randint`` excludes the last row and column
  of positions, so no block ever touches the bottom row or right column: on small grids,
  such as 4 x 4 patches of 16 px images, that would hide a quarter of the image).

Everything is vectorised over the batch: the only Python loops run over the target blocks
and the (at most ``targets + 1``) relaxation levels, never over images. Every random number
comes from the ``generator`` given (on its device), so the masks of a training step are a
function of (seed, step, rank).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["BlockMasks", "block_size", "sample_block_masks"]


@dataclass(frozen=True)
class BlockMasks:
    """Multi-block masks of a batch of B images over a grid of N = h x w patches (indices in
    raster order, row-major, as :meth:`VisionTransformer.embed_patches` lays out its tokens).

    ``context`` [B, Nc] int64: the context patches of each image, ascending.
    ``targets`` [M, B, Nt] int64: the patches of target block m of each image, each block's
    in raster order within the block (Nt = the block's height x width).
    ``context_block`` [B, N] bool: each image's context block before the targets were taken
    out of it (what the scale of the context refers to).
    ``restored`` [B] int64: how many target blocks, the last ones, were not taken out of
    each image's context to keep more than ``min_keep`` patches (0 but on crowded grids).
    ``target_size`` / ``context_size``: the (height, width) of the blocks of this batch.
    """

    context: Tensor
    targets: Tensor
    context_block: Tensor
    restored: Tensor
    target_size: tuple[int, int]
    context_size: tuple[int, int]


def block_size(grid: tuple[int, int], scale: float, aspect: float) -> tuple[int, int]:
    """(height, width) in patches of a block of ``scale`` of the ``grid`` and aspect ratio
    ``aspect`` (height / width): k = int(h w scale) patches, round(sqrt(k aspect)) high and
    round(sqrt(k / aspect)) wide (``MaskCollator._sample_block_size``), between 1 and the grid."""
    height, width = grid
    keep = int(height * width * scale)
    block_height = int(round(math.sqrt(keep * aspect)))
    block_width = int(round(math.sqrt(keep / aspect)))
    return min(max(block_height, 1), height), min(max(block_width, 1), width)


def _uniform(bounds: tuple[float, float], u: float) -> float:
    low, high = bounds
    return low + u * (high - low)


def _check_range(name: str, bounds: tuple[float, float], upper: float | None) -> None:
    low, high = bounds
    if not (0 < low <= high) or (upper is not None and high > upper):
        limit = f" <= {upper}" if upper is not None else ""
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high{limit}, got {tuple(bounds)}")


def sample_block_masks(
    batch_size: int,
    grid: tuple[int, int],
    generator: torch.Generator | None = None,
    *,
    targets: int = 4,
    target_scale: tuple[float, float] = (0.15, 0.2),
    target_aspect: tuple[float, float] = (0.75, 1.5),
    context_scale: tuple[float, float] = (0.85, 1.0),
    min_keep: int = 10,
    tries: int = 20,
    device: torch.device | str | None = None,
) -> BlockMasks:
    """I-JEPA's masks for ``batch_size`` images over a ``grid`` = (h, w) of patches (see the
    module's docstring). Random numbers come from ``generator`` on its device (the default
    CPU generator when None); the indices are returned on ``device`` (default: that device)."""
    height, width = grid
    patches = height * width
    if batch_size < 1 or targets < 1 or tries < 1 or height < 1 or width < 1:
        raise ValueError(f"need batch_size, targets, tries and the grid >= 1, got {batch_size}, {targets}, {tries}, {grid}")
    _check_range("target_scale", target_scale, 1.0)
    _check_range("target_aspect", target_aspect, None)
    _check_range("context_scale", context_scale, 1.0)
    draw_on = generator.device if generator is not None else torch.device("cpu")

    # One size per batch for the targets and one for the context (shared by all images).
    u_scale, u_aspect, u_context = torch.rand(3, generator=generator, device=draw_on).tolist()
    target_size = block_size(grid, _uniform(target_scale, u_scale), _uniform(target_aspect, u_aspect))
    context_size = block_size(grid, _uniform(context_scale, u_context), 1.0)
    if context_size[0] * context_size[1] <= min_keep:
        raise ValueError(f"a {context_size[0]}x{context_size[1]} context block on a {height}x{width} grid cannot keep "
                         f"more than min_keep={min_keep} patches")

    # Target blocks: a top-left corner per block and image, anywhere the block fits.
    rows_t, cols_t = target_size
    tops = torch.randint(0, height - rows_t + 1, (targets, batch_size), generator=generator, device=draw_on)
    lefts = torch.randint(0, width - cols_t + 1, (targets, batch_size), generator=generator, device=draw_on)
    rows = tops[..., None, None] + torch.arange(rows_t, device=draw_on)[:, None]  # [M, B, rows_t, 1]
    cols = lefts[..., None, None] + torch.arange(cols_t, device=draw_on)[None, :]  # [M, B, 1, cols_t]
    target_index = (rows * width + cols).flatten(-2)  # [M, B, Nt], raster order within the block
    covered = torch.zeros(targets, batch_size, patches, dtype=torch.bool, device=draw_on)
    covered.scatter_(2, target_index, True)

    # Context block: ``tries`` candidate corners per image; the first that keeps more than
    # min_keep patches once the targets are removed wins.
    rows_c, cols_c = context_size
    context_tops = torch.randint(0, height - rows_c + 1, (tries, batch_size, 1), generator=generator, device=draw_on)
    context_lefts = torch.randint(0, width - cols_c + 1, (tries, batch_size, 1), generator=generator, device=draw_on)
    grid_rows, grid_cols = torch.arange(height, device=draw_on), torch.arange(width, device=draw_on)
    in_rows = (grid_rows >= context_tops) & (grid_rows < context_tops + rows_c)  # [T, B, h]
    in_cols = (grid_cols >= context_lefts) & (grid_cols < context_lefts + cols_c)  # [T, B, w]
    candidates = (in_rows[..., :, None] & in_cols[..., None, :]).flatten(-2)  # [T, B, N]

    samples = torch.arange(batch_size, device=draw_on)
    context = torch.zeros(batch_size, patches, dtype=torch.bool, device=draw_on)
    context_block = torch.zeros_like(context)
    resolved = torch.zeros(batch_size, dtype=torch.bool, device=draw_on)
    restored = torch.zeros(batch_size, dtype=torch.int64, device=draw_on)
    # Exclude all targets, then relax one at a time from the last (the reference's
    # constrain_mask keeps the first len(acceptable_regions) - tries regions).
    for kept in range(targets, -1, -1):
        excluded = covered[:kept].any(dim=0)  # [B, N]; nothing when kept == 0
        allowed = candidates & ~excluded
        valid = allowed.sum(dim=-1) > min_keep  # [T, B]
        first = valid.int().argmax(dim=0)  # the first valid candidate of each image
        newly = valid.any(dim=0) & ~resolved
        context = torch.where(newly[:, None], allowed[first, samples], context)
        context_block = torch.where(newly[:, None], candidates[first, samples], context_block)
        restored = torch.where(newly, targets - kept, restored)
        resolved = resolved | newly
        if bool(resolved.all()):  # with no target removed every candidate keeps the whole block
            break

    # Trim every image's context to the batch's smallest, keeping the first in raster order.
    keep = int(context.sum(dim=1).min())
    positions = torch.arange(patches, device=draw_on)
    context_index = torch.where(context, positions, positions + patches).sort(dim=1).values[:, :keep]
    device = draw_on if device is None else torch.device(device)
    return BlockMasks(context_index.to(device), target_index.to(device), context_block.to(device), restored.to(device),
                      target_size, context_size)
