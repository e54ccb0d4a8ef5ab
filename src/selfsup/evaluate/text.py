"""Evaluation of language models: held-out masked-token accuracy and perplexity, the
pseudo-log-likelihood energy and its AUC, and the downstream probes on sentence embeddings
beside a bag-of-words baseline.

Energy of a sentence (Salazar et al., "Masked Language Model Scoring", ACL 2020): the
pseudo-log-likelihood energy E(s) = sum_t -log p(s_t | s with position t masked), one
masked copy per position, batched. A causal model's energy is its negative
log-likelihood. ``energy_auc`` is P(E(original) < E(same sentence with one token replaced
by a random one)).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from selfsup.energy import energy_auc
from selfsup.losses.masked import IGNORE

PAD_ID, SPECIAL_IDS, MASK_ID = 0, 5, 4  # ids below SPECIAL_IDS are [PAD] [UNK] [CLS] [SEP] [MASK]


@torch.no_grad()
def masked_token_metrics(method, views: Callable, ids: Tensor, generator: torch.Generator, batch_size: int = 256) -> dict:
    """Accuracy and perplexity of the predicted tokens on held-out sequences, masked as in
    training (``views``: the run's token view maker) from a fixed ``generator``."""
    total_nll, correct, count = 0.0, 0, 0
    for start in range(0, len(ids), batch_size):
        batch = views(ids[start : start + batch_size], generator)
        inputs, targets = _prediction_targets(method, batch)
        hidden = method.hidden(inputs)
        if method.causal_attention:
            hidden = hidden[:, :-1]
        selected = targets != IGNORE
        log_p = torch.log_softmax(method.backbone.logits(hidden[selected]), dim=-1)
        true = targets[selected]
        total_nll += float(-log_p.gather(1, true.unsqueeze(1)).sum())
        correct += int((log_p.argmax(dim=1) == true).sum())
        count += int(selected.sum())
    mean_nll = total_nll / max(1, count)
    return {"masked_accuracy": correct / max(1, count), "perplexity": float(torch.tensor(mean_nll).exp()), "predicted_tokens": count}


def _prediction_targets(method, views: list[Tensor]) -> tuple[Tensor, Tensor]:
    if method.causal_attention:  # next-token prediction: every real token after the first
        ids = views[0]
        return ids, ids[:, 1:].masked_fill(ids[:, 1:] == PAD_ID, IGNORE)
    return views[0], views[1]


@torch.no_grad()
def sentence_energy(method, ids: Tensor, batch_size: int = 512) -> Tensor:
    """E(s) [B] for token sequences ``ids`` [B, T]: pseudo-log-likelihood energy for a masked
    model, negative log-likelihood for a causal one (via the method's ``energy``)."""
    if method.causal_attention:
        scored = ids.clone()
        scored[ids >= SPECIAL_IDS] = MASK_ID  # score every real token
        return torch.cat([method.energy(scored[i : i + batch_size], ids[i : i + batch_size]) for i in range(0, len(ids), batch_size)])
    # One copy of each sentence per real position, with that position masked.
    rows, positions = (ids >= SPECIAL_IDS).nonzero(as_tuple=True)
    energies = torch.zeros(len(ids), device=ids.device)
    for start in range(0, len(rows), batch_size):
        row, position = rows[start : start + batch_size], positions[start : start + batch_size]
        masked = ids[row].clone()
        masked[torch.arange(len(row)), position] = MASK_ID
        energies.index_add_(0, row, method.energy(masked, ids[row]).float())
    return energies


@torch.no_grad()
def corrupt_one_token(ids: Tensor, vocab_size: int, generator: torch.Generator) -> Tensor:
    """The same sequences with one real token each replaced by a different random token."""
    corrupted = ids.clone()
    real = ids >= SPECIAL_IDS
    scores = torch.rand(ids.shape, generator=generator).to(ids.device).masked_fill(~real, -1)
    position = scores.argmax(dim=1)
    original = ids[torch.arange(len(ids)), position]
    offset = torch.randint(1, vocab_size - SPECIAL_IDS, (len(ids),), generator=generator).to(ids.device)
    replacement = SPECIAL_IDS + (original - SPECIAL_IDS + offset) % (vocab_size - SPECIAL_IDS)  # never the original
    corrupted[torch.arange(len(ids)), position] = replacement
    return corrupted


def pseudo_likelihood_auc(method, ids: Tensor, vocab_size: int, generator: torch.Generator) -> float:
    """P(E(s) < E(s with one random token replaced)) over held-out sequences ``ids`` that
    have at least two real tokens."""
    ids = ids[(ids >= SPECIAL_IDS).sum(dim=1) >= 2]
    corrupted = corrupt_one_token(ids, vocab_size, generator)
    return energy_auc(sentence_energy(method, ids).cpu(), sentence_energy(method, corrupted).cpu())


def bag_of_words(ids: Tensor, vocab_size: int) -> Tensor:
    """L2-normalised token counts [N, V] (special tokens left out): the baseline features."""
    counts = torch.zeros(len(ids), vocab_size)
    counts.scatter_add_(1, ids.cpu(), (ids.cpu() >= SPECIAL_IDS).float())
    return torch.nn.functional.normalize(counts, dim=1)

