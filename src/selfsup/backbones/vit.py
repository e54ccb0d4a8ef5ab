"""Vision transformers (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021), on
the transformer block the text encoder uses; DINO's main setting is ``vit-small``.

An image is cut into non-overlapping patches (a strided convolution), a learned [CLS]
token is prepended and learned position embeddings added; pre-LN blocks with fused
attention follow, then a final LayerNorm. The features are the [CLS] output (``pool="cls"``,
as DINO and MoCo v3 evaluate) or the mean of the patch outputs (``pool="mean"``). Position
embeddings are kept for the size the model is built for and interpolated bicubically to
other grids (DINO's ``interpolate_pos_encoding``), so multi-crop's small crops go through
the same model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones.transformer import Block

POOLS = ("cls", "mean")


def sincos_position_embedding(width: int, grid: tuple[int, int], device: torch.device | str | None = None) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings [h*w, width] of an h x w grid in row-major
    order (MAE's ``util/pos_embed.py`` ``get_2d_sincos_pos_embed``, which I-JEPA reuses):
    the first half of the channels encodes the column, the second half the row, each as
    [sin(pos * omega), cos(pos * omega)] with omega_i = 10000^(-i / (width / 4)),
    i = 0 .. width/4 - 1. Computed for any grid, so no interpolation is needed."""
    if width % 4:
        raise ValueError(f"the 2-d sin-cos position embedding needs a width divisible by 4, got {width}")
    height, grid_width = grid
    omega = 1.0 / 10000 ** (torch.arange(width // 4, dtype=torch.float64, device=device) / (width / 4))
    rows, columns = torch.meshgrid(torch.arange(height, dtype=torch.float64, device=device),
                                   torch.arange(grid_width, dtype=torch.float64, device=device), indexing="ij")

    def one_axis(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([one_axis(columns), one_axis(rows)], dim=1).float()


@dataclass(frozen=True)
class ViTSize:
    width: int
    depth: int
    heads: int


# Dosovitskiy et al. 2021, Table 1, and DeiT's tiny and small (Touvron et al. 2021).
VIT_SIZES = {
    "tiny": ViTSize(192, 12, 3),
    "small": ViTSize(384, 12, 6),
    "base": ViTSize(768, 12, 12),
    "large": ViTSize(1024, 24, 16),
}


class VisionTransformer(nn.Module):
    """A ViT trunk mapping images [B, C, H, W] to features [B, width]."""

    def __init__(self, size: ViTSize, in_channels: int = 3, image_size: int = 224, patch_size: int = 16,
                 pool: str = "cls", mlp_ratio: int = 4):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
        self.patch_size, self.pool = patch_size, pool
        self.grid = max(1, image_size // patch_size)
        self.patch_embedding = nn.Conv2d(in_channels, size.width, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, size.width))
        self.position_embedding = nn.Parameter(torch.zeros(1, 1 + self.grid**2, size.width))
        self.blocks = nn.ModuleList(Block(size.width, size.heads, mlp_ratio, bias=True) for _ in range(size.depth))
        self.norm = nn.LayerNorm(size.width, eps=1e-6)
        self.output_dim = size.width
        nn.init.trunc_normal_(self.position_embedding, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def _positions(self, grid_height: int, grid_width: int) -> torch.Tensor:
        if (grid_height, grid_width) == (self.grid, self.grid):
            return self.position_embedding
        cls, patches = self.position_embedding[:, :1], self.position_embedding[:, 1:]
        patches = patches.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=(grid_height, grid_width), mode="bicubic", align_corners=False)
        return torch.cat([cls, patches.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)

    def embed_patches(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """The patch tokens of ``images`` with their position embeddings, [B, h*w, width] in
        row-major order, and the grid (h, w): what masked-image methods select from."""
        patches = self.patch_embedding(images)  # [B, W, h, w]
        grid_height, grid_width = patches.shape[-2:]
        positions = self._positions(grid_height, grid_width)[:, 1:]
        return patches.flatten(2).transpose(1, 2) + positions, (grid_height, grid_width)

    def encode(self, patch_tokens: torch.Tensor, cls: bool = True) -> torch.Tensor:
        """Blocks and final norm over ``patch_tokens`` [B, n, width] (any subset of the grid,
        position embeddings added), with the [CLS] token first when ``cls``: [B, (1 +) n, width]."""
        tokens = patch_tokens
        if cls:
            first = (self.cls_token + self.position_embedding[:, :1]).expand(patch_tokens.shape[0], -1, -1)
            tokens = torch.cat([first, patch_tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens, None, False)
        return self.norm(tokens)

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The features of :meth:`encode`'s output (with [CLS]): the [CLS] output or the patches' mean."""
        return tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool_tokens(self.encode(self.embed_patches(images)[0]))
