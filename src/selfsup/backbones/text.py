"""Text encoders: a pre-LayerNorm transformer for token sequences (BERT sizes, Cramming
recipe), and the lookup table of the static word models.

BERT (Devlin et al. 2019) with the changes of Cramming (Geiping & Goldstein 2022) that
make it train well on a small budget: LayerNorm of the embeddings, before each sub-layer
(pre-LN) and at the end, no dropout during pretraining, no biases in the linear layers and
LayerNorms, and an output projection tied to the token embedding that a loss can apply
only at the positions it predicts ("sparse prediction", see losses.masked.masked_lm).
With ``causal=True`` the same stack is a GPT-style decoder-only language model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones.transformer import Block, Unpadded, attention_mask_for


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
        return self._encode(ids, attention_mask, every_layer=False)[-1]

    def layer_states(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The hidden states [B, T, D] after each stage: the summed embeddings (after their
        LayerNorm), each block's output, and the final LayerNorm's (what ``forward`` returns);
        depth + 2 tensors, for reading a layer other than the last."""
        return self._encode(ids, attention_mask, every_layer=True)

    def _encode(self, ids: torch.Tensor, attention_mask: torch.Tensor | None, every_layer: bool) -> list[torch.Tensor]:
        length = ids.shape[1]
        if length > self.max_length:
            raise ValueError(f"sequence length {length} exceeds max_length {self.max_length}")
        positions = torch.arange(length, device=ids.device)
        x = self.embedding_norm(self.token_embedding(ids) + self.position_embedding(positions))
        if attention_mask is None or bool(attention_mask.all()):
            states = [x] if every_layer else []
            for block in self.blocks:
                x = block(x, None, self.causal)
                states += [x] if every_layer else []
            return [*states, self.norm(x)]
        unpadded = Unpadded(attention_mask.flatten().nonzero().squeeze(1), len(ids), length)
        x = x.flatten(0, 1).index_select(0, unpadded.index)
        mask = attention_mask_for(attention_mask, self.causal)
        states = [unpadded.pad(x)] if every_layer else []
        for block in self.blocks:
            x = block(x, mask, self.causal, unpadded)
            states += [unpadded.pad(x)] if every_layer else []
        return [*states, unpadded.pad(self.norm(x))]

    def output_weight(self) -> torch.Tensor:
        """The output projection [vocab, width]: the token embedding itself (tied)."""
        return self.token_embedding.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits [..., vocab] for hidden states [..., width]; pass only the rows
        to predict (sparse prediction): the [vocab x width] product dominates the cost."""
        return F.linear(self.prediction_transform(hidden), self.output_weight(), self.output_bias)


class StaticEmbedding(nn.Module):
    """A lookup table as a text backbone: ``forward(ids, attention_mask) -> [B, T, D]``,
    the vector of each token whatever its context (the interface of the transformer)."""

    def __init__(self, vocab_size: int, width: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        nn.init.uniform_(self.token_embedding.weight, -0.5 / width, 0.5 / width)  # word2vec's initialisation
        self.output_dim = width
        self.causal = False

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.token_embedding(ids)
