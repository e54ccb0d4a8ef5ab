"""Evaluation of text models: held-out masked-token accuracy and perplexity, the energy
AUC of sentences, the homonym check, and a bag-of-words baseline for the probes.

Each method scores a sentence with its own ``sentence_energy``: the pseudo-log-likelihood
energy for masked models (Salazar et al., ACL 2020), the negative log-likelihood for a
causal one, the log-bilinear co-occurrence score for word2vec and GloVe. ``energy_auc`` is
P(E(original) < E(same sentence with one token replaced by a random one)).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from selfsup.data.tokenizer import FIRST_REGULAR_ID, PAD_ID
from selfsup.energy import energy_auc
from selfsup.losses.masked import IGNORE, next_token_targets


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
        return ids, next_token_targets(ids, PAD_ID)
    return views[0], views[1]


@torch.no_grad()
def corrupt_one_token(ids: Tensor, vocab_size: int, generator: torch.Generator) -> Tensor:
    """The same sequences with one real token each replaced by a different random token."""
    corrupted = ids.clone()
    real = ids >= FIRST_REGULAR_ID
    scores = torch.rand(ids.shape, generator=generator).to(ids.device).masked_fill(~real, -1)
    position = scores.argmax(dim=1)
    original = ids[torch.arange(len(ids)), position]
    offset = torch.randint(1, vocab_size - FIRST_REGULAR_ID, (len(ids),), generator=generator).to(ids.device)
    replacement = FIRST_REGULAR_ID + (original - FIRST_REGULAR_ID + offset) % (vocab_size - FIRST_REGULAR_ID)  # never the original
    corrupted[torch.arange(len(ids)), position] = replacement
    return corrupted


def pseudo_likelihood_auc(method, ids: Tensor, vocab_size: int, generator: torch.Generator) -> float:
    """P(E(s) < E(s with one random token replaced)) over held-out sequences ``ids`` that
    have at least two real tokens."""
    ids = ids[(ids >= FIRST_REGULAR_ID).sum(dim=1) >= 2]
    corrupted = corrupt_one_token(ids, vocab_size, generator)
    return energy_auc(method.sentence_energy(ids).float().cpu(), method.sentence_energy(corrupted).float().cpu())


def bag_of_words(ids: Tensor, vocab_size: int) -> Tensor:
    """L2-normalised token counts [N, V] (special tokens left out): the baseline features."""
    counts = torch.zeros(len(ids), vocab_size)
    counts.scatter_add_(1, ids.cpu(), (ids.cpu() >= FIRST_REGULAR_ID).float())
    return torch.nn.functional.normalize(counts, dim=1)



# Words of the Python documentation used in more than one sense (noun and verb, or a
# Python meaning and a plain one); those that are single tokens of a run's vocabulary are
# checked.
HOMONYMS = ("set", "return", "type", "object", "key", "open", "close", "value", "call", "list", "file", "default", "order", "state")


@torch.no_grad()
def homonym_spread(method, ids: Tensor, words: dict[str, int], max_occurrences: int = 64) -> dict:
    """How much the vector of one word changes with its sentence: for each word (its token
    id), the cosine between the embeddings of its occurrences in ``ids`` (up to
    ``max_occurrences``), mean and spread (std) over the pairs. A static model gives
    cosine 1 and spread 0 by construction; a contextual one less than 1."""
    report = {}
    for word, token in words.items():
        rows, positions = (ids == token).nonzero(as_tuple=True)
        rows, positions = rows[:max_occurrences], positions[:max_occurrences]
        if len(rows) < 2:
            continue
        vectors = torch.nn.functional.normalize(method.hidden(ids[rows])[torch.arange(len(rows)), positions].float(), dim=1)
        cosines = (vectors @ vectors.T)[torch.triu_indices(len(rows), len(rows), offset=1).unbind()]
        report[word] = {"occurrences": len(rows), "mean_cosine": float(cosines.mean()), "cosine_std": float(cosines.std(correction=0))}
    mean = sum(r["mean_cosine"] for r in report.values()) / len(report) if report else None
    return {"words": report, "mean_cosine": mean}
