"""I-JEPA's multi-block masks: block sizes as the reference rounds them, in the paper's
ranges; a context block of 0.85-1 of the grid with the targets taken out; index tensors that
stack; the same masks for the same seed; the whole batch at once."""

import math

import pytest
import torch

from selfsup.augment.blocks import block_size, sample_block_masks


def reference_size(grid: tuple[int, int], scale: float, aspect: float) -> tuple[int, int]:
    """MaskCollator._sample_block_size written out again (without its cap one patch short of the grid)."""
    keep = int(grid[0] * grid[1] * scale)
    return min(max(int(round(math.sqrt(keep * aspect))), 1), grid[0]), min(max(int(round(math.sqrt(keep / aspect))), 1), grid[1])


def reachable_sizes(grid, scales, aspects) -> set[tuple[int, int]]:
    """Every block size some (scale, aspect) in the ranges rounds to."""
    return {reference_size(grid, s, a) for s in torch.linspace(*scales, 201).tolist() for a in torch.linspace(*aspects, 201).tolist()}


def union_of_targets(targets: torch.Tensor, patches: int) -> torch.Tensor:
    """[M, B, Nt] indices -> [B, N] bool: the patches some target block covers."""
    covered = torch.zeros(targets.shape[1], patches, dtype=torch.bool)
    for block in targets:
        covered.scatter_(1, block, True)
    return covered


def as_mask(index: torch.Tensor, patches: int) -> torch.Tensor:
    return torch.zeros(index.shape[0], patches, dtype=torch.bool).scatter_(1, index, True)


def contiguous(lines: torch.Tensor) -> torch.Tensor:
    """[B, L] bool -> [B]: whether each row's True entries form one run."""
    positions = torch.arange(lines.shape[1])
    first = torch.where(lines, positions, lines.shape[1]).min(dim=1).values
    last = torch.where(lines, positions, -1).max(dim=1).values
    return last - first + 1 == lines.sum(dim=1)


def are_rectangles(masks: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether each [N] bool row of ``masks`` is exactly one block of ``size`` on ``grid``."""
    cells = masks.view(-1, *grid)
    rows, cols = cells.any(dim=2), cells.any(dim=1)
    return bool((cells.sum(dim=(1, 2)) == size[0] * size[1]).all() and (rows.sum(dim=1) == size[0]).all()
                and (cols.sum(dim=1) == size[1]).all() and contiguous(rows).all() and contiguous(cols).all())


def test_block_size_follows_the_reference_rounding():
    grid = (14, 14)
    for scale in torch.linspace(0.1, 1.0, 37).tolist():
        for aspect in torch.linspace(0.5, 2.0, 31).tolist():
            assert block_size(grid, scale, aspect) == reference_size(grid, scale, aspect)
    assert block_size((16, 16), 1.0, 1.0) == (16, 16)  # the whole grid: the reference would stop at 15 x 15
    assert block_size((4, 4), 0.15, 0.75) == (1, 2)  # k = int(2.4) = 2: round(1.22) x round(1.63)
    assert block_size((2, 2), 0.1, 1.0) == (1, 1)  # never empty


@pytest.mark.parametrize("grid", [(14, 14), (16, 16), (4, 4), (7, 9)])
def test_targets_and_context_over_many_draws(grid):
    patches = grid[0] * grid[1]
    target_sizes = reachable_sizes(grid, (0.15, 0.2), (0.75, 1.5))
    context_sizes = reachable_sizes(grid, (0.85, 1.0), (1.0, 1.0))
    seen = set()
    for seed in range(30):
        masks = sample_block_masks(16, grid, torch.Generator().manual_seed(seed), min_keep=0)
        rows, cols = masks.target_size
        assert masks.target_size in target_sizes and masks.context_size in context_sizes
        seen.add(masks.target_size)
        # Shapes: 4 target blocks of the batch's size, one context per image, trimmed to stack.
        assert masks.targets.shape == (4, 16, rows * cols) and masks.targets.dtype == torch.int64
        assert masks.context.shape[0] == 16 and masks.context.dtype == torch.int64
        assert masks.context_block.shape == (16, patches) and masks.restored.shape == (16,)
        assert all(are_rectangles(as_mask(block, patches), grid, masks.target_size) for block in masks.targets)
        # The context block: of 0.85-1 of the grid (up to the reference's rounding), square
        # unless the grid cuts it, before the targets are taken out.
        assert masks.context_size[0] == masks.context_size[1] or max(masks.context_size) > min(grid)
        assert 0.85 - 2.0 / min(grid) <= masks.context_size[0] * masks.context_size[1] / patches <= 1.0
        assert are_rectangles(masks.context_block, grid, masks.context_size)
        # Context: inside its block, disjoint from every target not restored, ascending, no repeats.
        context = as_mask(masks.context, patches)
        assert not (context & ~masks.context_block).any()
        excluded = torch.zeros(16, patches, dtype=torch.bool)
        for m, block in enumerate(masks.targets):
            excluded |= as_mask(block, patches) & (m < 4 - masks.restored)[:, None]
        assert not (context & excluded).any()
        assert (masks.context.diff(dim=1) > 0).all()
        # Trimmed to the batch's smallest context, keeping each image's first patches in raster order.
        full = masks.context_block & ~excluded
        assert masks.context.shape[1] == int(full.sum(dim=1).min()) > 0
        first = torch.where(full, torch.arange(patches), torch.arange(patches) + patches).sort(dim=1).values
        assert torch.equal(masks.context, first[:, : masks.context.shape[1]])
        if min(grid) >= 14:  # room enough: no target is ever given back
            assert not masks.restored.any() and not (context & union_of_targets(masks.targets, patches)).any()
    assert len(seen) > 1 or len(target_sizes) == 1  # the size is drawn, not fixed


def test_scales_and_aspect_ratios_lie_in_the_papers_ranges_up_to_rounding():
    grid = (32, 32)  # fine enough for the rounding to move little
    for seed in range(60):
        masks = sample_block_masks(2, grid, torch.Generator().manual_seed(seed))
        rows, cols = masks.target_size
        assert 0.15 - 0.02 <= rows * cols / 1024 <= 0.2 + 0.02
        assert 0.75 - 0.1 <= rows / cols <= 1.5 + 0.1
        assert 0.85 - 0.05 <= masks.context_size[0] ** 2 / 1024 <= 1.0


def test_the_same_seed_gives_the_same_masks_and_positions_vary_per_image():
    first = sample_block_masks(32, (14, 14), torch.Generator().manual_seed(5))
    again = sample_block_masks(32, (14, 14), torch.Generator().manual_seed(5))
    other = sample_block_masks(32, (14, 14), torch.Generator().manual_seed(6))
    assert torch.equal(first.context, again.context) and torch.equal(first.targets, again.targets)
    assert first.target_size == again.target_size and first.context_size == again.context_size
    assert not (first.targets.shape == other.targets.shape and torch.equal(first.targets, other.targets))
    corners = first.targets[:, :, 0]  # each block's top-left patch
    assert len(set(corners.flatten().tolist())) > 10  # positions are drawn per image and block


def test_a_large_batch_at_once_reaches_every_edge_of_the_grid():
    """The batch is sampled in tensor operations (no loop over images): 1,000 images take one
    call. Blocks reach the last row and column (the reference's positions never do)."""
    grid = (16, 16)
    masks = sample_block_masks(1000, grid, torch.Generator().manual_seed(0))
    assert masks.targets.shape[:2] == (4, 1000) and masks.context.shape[0] == 1000
    covered = union_of_targets(masks.targets, 256).view(1000, *grid)
    assert covered[:, -1, :].any() and covered[:, :, -1].any() and covered[:, 0, :].any() and covered[:, :, 0].any()
    assert not (as_mask(masks.context, 256) & covered.flatten(1)).any()


def test_a_context_too_small_gets_the_last_targets_back():
    """On a 4 x 4 grid the targets often leave no more than 12 patches of the context: the
    last target blocks are then not taken out of it (the reference's relaxation), so every
    image keeps more than min_keep patches."""
    restored = []
    for seed in range(10):
        masks = sample_block_masks(8, (4, 4), torch.Generator().manual_seed(seed), min_keep=12)
        assert masks.context.shape[1] > 12
        restored += masks.restored.tolist()
    assert max(restored) > 0 and min(restored) >= 0 and max(restored) <= 4


def test_bad_values_are_clear_errors():
    with pytest.raises(ValueError, match="cannot keep more than min_keep=20"):
        sample_block_masks(2, (4, 4), min_keep=20)
    with pytest.raises(ValueError, match="target_scale must be"):
        sample_block_masks(2, (4, 4), target_scale=(0.3, 0.2))
    with pytest.raises(ValueError, match="context_scale must be"):
        sample_block_masks(2, (4, 4), context_scale=(0.85, 1.5))
