"""Masked and predictive losses on tokens: masked and causal language modelling, and the
word-embedding objectives (skip-gram with negative sampling, GloVe).

The language-model losses take the encoder's hidden states and a ``project`` callable from
hidden rows [N, D] to vocabulary logits [N, V] (e.g. ``TransformerEncoder.logits``), so
that the vocabulary projection runs only on the positions that are predicted.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

IGNORE = -100  # target at positions that are not predicted (PyTorch's ignore_index)

Projection = Callable[[torch.Tensor], torch.Tensor]


def masked_lm(hidden: torch.Tensor, targets: torch.Tensor, project: Projection) -> torch.Tensor:
    """BERT's masked-language-model loss (Devlin et al. 2019, sec. 3.1), sparse prediction
    (Cramming, Geiping & Goldstein 2022):

        L = -1/|M| sum_{i in M} log softmax(project(h_i))[t_i],   M = {i : t_i != -100}

    ``hidden`` [..., D] and ``targets`` [...] (the original token at selected positions,
    -100 elsewhere). The selected rows are gathered before ``project``, so the [V x D]
    vocabulary product never runs on unselected positions. The mean is over this process's
    selected tokens; with none selected the loss is a zero that still has a graph (through
    ``project``'s parameters), so a step on it is a harmless no-op.
    """
    selected = targets != IGNORE
    logits = project(hidden[selected])
    total = F.cross_entropy(logits, targets[selected], reduction="sum")
    return total / selected.sum().clamp(min=1)


@torch.no_grad()
def masked_accuracy(hidden: torch.Tensor, targets: torch.Tensor, project: Projection) -> tuple[torch.Tensor, torch.Tensor]:
    """(number of selected positions whose arg-max prediction is the target, number of
    selected positions), as 0-d tensors that can be summed over batches and processes."""
    selected = targets != IGNORE
    predictions = project(hidden[selected]).argmax(dim=-1)
    return (predictions == targets[selected]).sum(), selected.sum()


def next_token_targets(ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """[B, T - 1]: token t + 1 as the target of position t, -100 where it is [PAD]."""
    next_tokens = ids[:, 1:]
    return next_tokens.masked_fill(next_tokens == pad_id, IGNORE)


def causal_lm(hidden: torch.Tensor, ids: torch.Tensor, project: Projection, pad_id: int = 0) -> torch.Tensor:
    """Next-token cross-entropy of a causal language model (GPT, Radford et al. 2018, eq. 1):

        L = -1/|P| sum_{b, t : x_{b,t+1} != pad} log softmax(project(h_{b,t}))[x_{b,t+1}]

    ``hidden`` [B, T, D] from a causal encoder over ``ids`` [B, T]: position t predicts
    token t + 1; [PAD] targets are ignored. The last position has nothing to predict.
    """
    return masked_lm(hidden[:, :-1], next_token_targets(ids, pad_id), project)


def sgns(center: torch.Tensor, context: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Skip-gram with negative sampling (Mikolov et al. 2013, "Distributed representations
    of words and phrases", eq. 4), mean over the B (center, context) pairs:

        L = -log sigma(v'_o . v_c) - sum_{k=1..K} log sigma(-v'_{n_k} . v_c)

    ``center`` [B, D] input vectors v_c, ``context`` [B, D] output vectors v'_o of the
    observed context words, ``negatives`` [B, K, D] output vectors of K words drawn from the
    noise distribution (unigram^(3/4) in the paper).
    """
    positive = (center * context).sum(dim=-1)
    negative = torch.einsum("bd,bkd->bk", center, negatives)
    return -(F.logsigmoid(positive) + F.logsigmoid(-negative).sum(dim=-1)).mean()


def glove(
    word: torch.Tensor,
    context: torch.Tensor,
    word_bias: torch.Tensor,
    context_bias: torch.Tensor,
    counts: torch.Tensor,
    x_max: float = 100.0,
    alpha: float = 0.75,
) -> torch.Tensor:
    """GloVe (Pennington, Socher, Manning 2014), eqs. 8-9, over a batch of B co-occurring
    (word i, context j) pairs with counts X_ij > 0:

        J = sum_ij f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2
        f(x) = (x / x_max)^alpha if x < x_max else 1

    The paper sums over all non-zero X_ij; this returns the mean over the batch, so the
    step size does not depend on the batch size (the sum is B times it).
    """
    weight = (counts / x_max).clamp(max=1.0).pow(alpha)
    residual = (word * context).sum(dim=-1) + word_bias + context_bias - counts.log()
    return (weight * residual.pow(2)).mean()
