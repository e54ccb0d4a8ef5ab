"""A pre-LayerNorm transformer encoder for token sequences (BERT sizes, Cramming recipe).

BERT (Devlin et al. 2019) with the changes of Cramming (Geiping & Goldstein 2022) that
make it train well on a small budget: LayerNorm of the embeddings, before each sub-layer
(pre-LN) and at the end, no dropout during pretraining, no biases in the linear layers and
LayerNorms, and an output projection tied to the token embedding that a loss can apply
only at the positions it predicts ("sparse prediction", see losses.masked.masked_lm).
With ``causal=True`` the same stack is a GPT-style decoder-only language model.
"""

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


class TransformerEncoder(nn.Module):
    """Pre-LN transformer over token ids (BERT; Cramming, Geiping & Goldstein 2022).

    ``forward(ids [B, T], attention_mask [B, T] or None) -> hidden [B, T, width]``, with
    ``attention_mask`` True at real tokens and False at padding; hidden states at padding
    are zero. With padding, every token-wise layer (projections, MLP, LayerNorm) runs on
    the real tokens only, as in Cramming's and MosaicBERT's unpadded BERT: the result is
    the padded computation's, at a cost that follows the real tokens, not the padded
    length (docstrings are a third of 128 tokens on average). ``logits(hidden)`` maps
    hidden states (any leading shape) to vocabulary logits through BERT's prediction
    transform (Linear, GELU, LayerNorm) and the token embedding, tied:
    ``logits = transform(hidden) @ embedding.weight.T (+ output bias when bias=True)``.
    Cramming drops all biases, the decoder's included; ``bias=True`` gives BERT's biases.

    BERT-base is width 768, depth 12, heads 12; BERT-large 1024, 24, 16. Weights start at
    N(0, 0.02) and biases at zero (BERT's initialisation).
    """

    def __init__(
        self,
        vocab_size: int,
        width: int = 256,
        depth: int = 4,
        heads: int = 4,
        max_length: int = 128,
        mlp_ratio: int = 4,
        causal: bool = False,
        bias: bool = False,
    ):
        super().__init__()
        self.causal = causal
        self.max_length = max_length
        self.output_dim = width
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(max_length, width)
        # BERT's and Cramming's LayerNorm of the summed embeddings: without it the first
        # steps learn markedly slower (8.3% against 11.3% masked-token accuracy after 200
        # steps in benchmarks/text.py's setting).
        self.embedding_norm = nn.LayerNorm(width, bias=bias)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, bias) for _ in range(depth))
        self.norm = nn.LayerNorm(width, bias=bias)
        self.prediction_transform = nn.Sequential(
            nn.Linear(width, width, bias=bias), nn.GELU(), nn.LayerNorm(width, bias=bias)
        )
        self.output_bias = nn.Parameter(torch.zeros(vocab_size)) if bias else None
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        length = ids.shape[1]
        if length > self.max_length:
            raise ValueError(f"sequence length {length} exceeds max_length {self.max_length}")
        positions = torch.arange(length, device=ids.device)
        x = self.embedding_norm(self.token_embedding(ids) + self.position_embedding(positions))
        if attention_mask is None or bool(attention_mask.all()):
            for block in self.blocks:
                x = block(x, None, self.causal)
            return self.norm(x)
        unpadded = Unpadded(attention_mask.flatten().nonzero().squeeze(1), len(ids), length)
        x = x.flatten(0, 1).index_select(0, unpadded.index)
        mask = attention_mask_for(attention_mask, self.causal)
        for block in self.blocks:
            x = block(x, mask, self.causal, unpadded)
        return unpadded.pad(self.norm(x))

    def output_weight(self) -> torch.Tensor:
        """The output projection [vocab, width]: the token embedding itself (tied)."""
        return self.token_embedding.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits [..., vocab] for hidden states [..., width]; pass only the rows
        to predict (sparse prediction): the [vocab x width] product dominates the cost."""
        return F.linear(self.prediction_transform(hidden), self.output_weight(), self.output_bias)
