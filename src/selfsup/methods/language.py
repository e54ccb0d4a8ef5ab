"""Masked and causal language models over token sequences: BERT's MLM, its whole-word and
span variants, and GPT-style next-token prediction, all on one transformer encoder.

For text a "view" pair is the corrupted sequence x (tokens hidden, replaced or to be
predicted) and the original y; the energy F(x, y) is the negative log-likelihood the model
gives the hidden tokens of y in the context x: low when y fills x well.
"""

from __future__ import annotations

import torch

from selfsup.backbones.text import TransformerEncoder
from selfsup.data.tokenizer import FIRST_REGULAR_ID, MASK_ID, PAD_ID
from selfsup.losses import causal_lm, masked_accuracy, masked_lm
from selfsup.losses.masked import next_token_targets
from selfsup.methods.base import Batch, Method, StepOutput


def mean_pool(hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Average of the hidden states over the real (non-[PAD]) tokens: a sentence embedding."""
    real = (ids != PAD_ID).unsqueeze(-1).to(hidden.dtype)
    return (hidden * real).sum(dim=1) / real.sum(dim=1).clamp_min(1)


class MaskedLanguageModel(Method):
    """BERT's masked language model (Devlin et al., NAACL 2019, sec. 3.1), RoBERTa's dynamic
    masking (Liu et al. 2019, sec. 4.1) and Cramming's training simplifications (Geiping &
    Goldstein 2022): pre-LayerNorm encoder without dropout or biases, tied input/output
    embeddings, and the vocabulary softmax computed on the masked positions only.

    15% of the tokens are selected (never [PAD], [CLS] or [SEP]); of those 80% become
    [MASK], 10% a random token and 10% stay as they are. A new mask is drawn every time a
    sequence is seen. Loss: cross-entropy of the softmax over the vocabulary at the
    selected positions. The masking itself is done by the text view maker
    (:class:`selfsup.augment.masking.TokenViews`) from ``masking`` and the rates here.

    Recipe for the small encoders here: batches of 64 documents, AdamW, lr 4e-3 x batch/256
    (1e-3 at batch 64) with warm-up and cosine decay, weight decay 0.01 (Cramming's peak rate
    is 1e-3 too, at far larger batches; BERT 1e-4). The small batch buys steps: on one CPU
    core a step of 256 documents takes seconds, and a 15-minute run would make a few dozen.
    The rate was 1e-3 x batch/256 before: after 15 minutes on stdlib-docs 4x that rate gave
    17.6% masked-token accuracy against 15.4% and better probes in every column
    (BENCHMARKS.md, "Text").

    Energy: F(x, y) = sum over the [MASK] positions t of x of -log p(y_t | x).

    No embeddings go to the joint-embedding collapse monitor: a softmax over the vocabulary
    cannot settle on a constant without its loss rising, and the mean-pooled states of a
    transformer are anisotropic by nature (Ethayarajh, EMNLP 2019), which those thresholds
    would read as collapse.
    """

    name = "mlm"
    summary = "masked language model: predict 15% hidden tokens with a softmax over the vocabulary (Devlin et al. 2019)"
    modality = "text"
    masking = "tokens"
    predicts_tokens = True
    default_backbone = "transformer"
    train_recipe = {"optimizer": "adamw", "lr": 4e-3, "weight_decay": 0.01, "epochs": 40, "batch_size": 64}

    def __init__(self, backbone: TransformerEncoder, backbone_dim: int, mask_rate: float = 0.15,
                 mask_fraction: float = 0.8, random_fraction: float = 0.1):
        super().__init__(backbone)
        if not isinstance(backbone, TransformerEncoder):
            raise TypeError(f"method {self.name!r} needs a TransformerEncoder backbone, got {type(backbone).__name__}")
        if backbone.causal != self.causal_attention:
            raise ValueError(f"method {self.name!r} needs an encoder built with causal={self.causal_attention}")
        for name, value in (("mask_rate", mask_rate), ("mask_fraction", mask_fraction), ("random_fraction", random_fraction)):
            if not 0 <= value <= 1:
                raise ValueError(f"method.{name} must lie in [0, 1], got {value}")
        if mask_fraction + random_fraction > 1:
            raise ValueError(f"method.mask_fraction + method.random_fraction must be <= 1, got {mask_fraction + random_fraction}")
        self.mask_rate, self.mask_fraction, self.random_fraction = mask_rate, mask_fraction, random_fraction

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """Contextual token embeddings [B, T, D]."""
        return self.backbone(ids, attention_mask=ids != PAD_ID)

    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        inputs, targets = views[0], views[1]
        hidden = self.hidden(inputs)
        loss = masked_lm(hidden, targets, self.backbone.logits)
        correct, count = masked_accuracy(hidden.detach(), targets, self.backbone.logits)
        metrics = {"masked_accuracy": float(correct) / max(1, int(count))}
        return StepOutput(loss, metrics)

    @torch.no_grad()
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings [B, D]: the mean of the contextual token embeddings."""
        return mean_pool(self.hidden(ids), ids)

    def project(self, ids: torch.Tensor) -> torch.Tensor:
        return mean_pool(self.hidden(ids), ids)

    @torch.no_grad()
    def token_log_probabilities(self, ids: torch.Tensor) -> torch.Tensor:
        """log p(token | context) [B, T, V] at every position of ``ids`` (mask the positions
        to predict with [MASK] first)."""
        return torch.log_softmax(self.backbone.logits(self.hidden(ids)), dim=-1)

    @torch.no_grad()
    def sentence_energy(self, ids: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """The pseudo-log-likelihood energy [B] of token sequences (Salazar, Liang, Nguyen,
        Kirchhoff, "Masked Language Model Scoring", ACL 2020): sum over the real tokens t of
        -log p(s_t | s with t masked), one masked copy per token, batched."""
        rows, positions = (ids >= FIRST_REGULAR_ID).nonzero(as_tuple=True)
        energies = torch.zeros(len(ids), device=ids.device)
        for start in range(0, len(rows), batch_size):
            row, position = rows[start : start + batch_size], positions[start : start + batch_size]
            masked = ids[row].clone()
            masked[torch.arange(len(row), device=ids.device), position] = MASK_ID
            energies.index_add_(0, row, self.energy(masked, ids[row]).float())
        return energies

    @torch.no_grad()
    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hidden_positions = x == MASK_ID
        log_p = torch.log_softmax(self.backbone.logits(self.hidden(x)[hidden_positions]), dim=-1)
        nll = -log_p.gather(1, y[hidden_positions].unsqueeze(1)).squeeze(1)
        return torch.zeros(len(x), dtype=nll.dtype, device=x.device).index_add_(0, hidden_positions.nonzero()[:, 0], nll)


class WholeWordMaskedLanguageModel(MaskedLanguageModel):
    """BERT with whole-word masking (Devlin et al., the google-research/bert release of
    2019-05-31; Cui et al. 2021): words are selected, and every WordPiece of a selected
    word is masked together, so a word cannot be guessed from its own other pieces."""

    name = "mlm-wwm"
    summary = "masked language model masking whole words, not word pieces (BERT whole-word masking)"
    masking = "whole-words"


class SpanMaskedLanguageModel(MaskedLanguageModel):
    """SpanBERT's span masking (Joshi et al., TACL 2020, sec. 3.1): contiguous spans with
    lengths from a geometric distribution (p = 0.2, clipped at 10; mean 3.8) are masked
    until 15% of the tokens are covered, replaced 80/10/10 as in BERT; the loss is the
    MLM loss on the span tokens (the span-boundary objective is left out)."""

    name = "span"
    summary = "masked language model masking contiguous spans (SpanBERT, Joshi et al. 2020)"
    masking = "spans"


class CausalLanguageModel(MaskedLanguageModel):
    """GPT-style next-token prediction (Radford et al. 2018, eq. 1) on the same encoder with
    causal attention: position t sees tokens <= t only and predicts token t + 1.

    Energy: F(x, y) = sum over the [MASK] positions t of x of -log p(y_t | y_<t); with
    every position marked, the negative log-likelihood of the whole sequence.
    """

    name = "causal"
    summary = "causal language model: next-token prediction with causal attention (GPT, Radford et al. 2018)"
    masking = "none"
    causal_attention = True

    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        ids = views[0]
        hidden = self.hidden(ids)
        loss = causal_lm(hidden, ids, self.backbone.logits, pad_id=PAD_ID)
        correct, count = masked_accuracy(hidden[:, :-1].detach(), next_token_targets(ids, PAD_ID), self.backbone.logits)
        metrics = {"next_token_accuracy": float(correct) / max(1, int(count))}
        return StepOutput(loss, metrics)

    @torch.no_grad()
    def sentence_energy(self, ids: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """The negative log-likelihood [B] of token sequences, every real token scored."""
        scored = torch.where(ids >= FIRST_REGULAR_ID, torch.full_like(ids, MASK_ID), ids)
        return torch.cat([self.energy(scored[i : i + batch_size], ids[i : i + batch_size]) for i in range(0, len(ids), batch_size)])

    @torch.no_grad()
    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        scored = (x == MASK_ID)[:, 1:]  # the first token has no context to be predicted from
        log_p = torch.log_softmax(self.backbone.logits(self.hidden(y)[:, :-1][scored]), dim=-1)
        nll = -log_p.gather(1, y[:, 1:][scored].unsqueeze(1)).squeeze(1)
        return torch.zeros(len(y), dtype=nll.dtype, device=y.device).index_add_(0, scored.nonzero()[:, 0], nll)


