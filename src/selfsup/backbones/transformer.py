"""The pre-LayerNorm transformer block shared by the text encoder and the predictors of the
joint-embedding predictive architectures: fused multi-head self-attention, an MLP, and the
bookkeeping that lets token-wise layers skip padding."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Unpadded(NamedTuple):
    """Where the real tokens of a padded batch sit: ``index`` [N] into the flattened
    ``batch x length`` grid. Token-wise layers run on the N real rows only; attention puts
    them back in the grid (padding keys are masked out anyway)."""

    index: torch.Tensor
    batch: int
    length: int

    def pad(self, rows: torch.Tensor) -> torch.Tensor:
        """[N, C] real rows -> [batch, length, C], zeros at padding."""
        grid = rows.new_zeros(self.batch * self.length, rows.shape[-1])
        return grid.index_copy(0, self.index, rows).view(self.batch, self.length, -1)


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` (fused kernels)."""

    def __init__(self, width: int, heads: int, bias: bool):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.out = nn.Linear(width, width, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool, unpadded: Unpadded | None = None) -> torch.Tensor:
        """``x`` [B, T, W], or the real rows [N, W] of ``unpadded``. ``mask``: bool
        [B, 1, T, T], True where a query may attend to a key; when it is given it already
        holds the causal constraint, otherwise ``causal`` asks the kernel."""
        qkv = self.qkv(x)
        if unpadded is not None:
            qkv = unpadded.pad(qkv)
        batch, length, width = qkv.shape[0], qkv.shape[1], x.shape[-1]
        q, k, v = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        attended = attended.transpose(1, 2).reshape(batch, length, width)
        if unpadded is not None:
            attended = attended.view(batch * length, width).index_select(0, unpadded.index)
        return self.out(attended)


class Block(nn.Module):
    """x = x + Attn(LN(x)); x = x + MLP(LN(x)), the pre-LN order (Xiong et al. 2020)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, bias: bool):
        super().__init__()
        self.attention_norm = nn.LayerNorm(width, bias=bias)
        self.attention = SelfAttention(width, heads, bias)
        self.mlp_norm = nn.LayerNorm(width, bias=bias)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width, bias=bias), nn.GELU(), nn.Linear(mlp_ratio * width, width, bias=bias)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool, unpadded: Unpadded | None = None) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), mask, causal, unpadded)
        return x + self.mlp(self.mlp_norm(x))


def attention_mask_for(padding: torch.Tensor | None, causal: bool) -> torch.Tensor | None:
    """Combine a key-padding mask [B, T] (True = real token) with the causal constraint into
    a bool [B, 1, T, T] mask (True = may attend), or None when there is no padding.

    Every query may also attend to itself, so that no row is fully masked: with left
    padding and a causal mask, or an all-padding sequence, a query would otherwise have no
    key at all. PyTorch >= 2.5 returns zeros for such rows, but earlier versions (this
    package allows 2.3) give NaN, which reaches real positions in the next layer through
    the zero attention weights on it (0 * NaN = NaN). Real queries are unaffected: their own
    position is a real key anyway.
    """
    if padding is None:
        return None
    length = padding.shape[1]
    itself = torch.eye(length, dtype=torch.bool, device=padding.device)
    mask = padding.bool()[:, None, None, :] | itself
    if causal:
        mask = mask & torch.ones(length, length, dtype=torch.bool, device=padding.device).tril()
    return mask
