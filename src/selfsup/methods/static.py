"""Static word embeddings: skip-gram with negative sampling (word2vec) and GloVe, the
baselines that contextual models are measured against: one vector per vocabulary entry,
the same in every sentence.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.backbones.text import StaticEmbedding
from selfsup.data.tokenizer import FIRST_REGULAR_ID
from selfsup.losses import glove, sgns
from selfsup.methods.base import Batch, Method, StepOutput, TrainingViews


def window_pairs(
    ids: torch.Tensor, window: int, both_orders: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(center ids, context ids, distance, row) of every pair of regular tokens at most
    ``window`` apart in the same row of ``ids`` [B, T]; each pair in both orders, or only
    left-to-right."""
    rows = torch.arange(len(ids), device=ids.device).unsqueeze(1).expand_as(ids)
    centers, contexts, distances, pair_rows = [], [], [], []
    for distance in range(1, min(window, ids.shape[1] - 1) + 1):
        left, right = ids[:, :-distance], ids[:, distance:]
        real = (left >= FIRST_REGULAR_ID) & (right >= FIRST_REGULAR_ID)
        for a, b in ((left, right), (right, left))[: 2 if both_orders else 1]:
            centers.append(a[real])
            contexts.append(b[real])
            distances.append(torch.full((int(real.sum()),), distance, device=ids.device))
            pair_rows.append(rows[:, :-distance][real])
    return torch.cat(centers), torch.cat(contexts), torch.cat(distances), torch.cat(pair_rows)


class StaticWordModel(Method):
    """What the static models share: the input table is the backbone; a sentence is the mean
    of its word vectors; counts over the corpus are taken once before training."""

    modality = "text"
    default_backbone = "embedding"
    has_word_vectors = True
    train_recipe = {"optimizer": "adamw", "lr": 0.05, "weight_decay": 0.0, "epochs": 20}

    def __init__(self, backbone: StaticEmbedding, backbone_dim: int, window: int):
        super().__init__(backbone)
        if not isinstance(backbone, StaticEmbedding):
            raise TypeError(f"method {self.name!r} needs a StaticEmbedding backbone, got {type(backbone).__name__}")
        vocab_size = backbone.token_embedding.num_embeddings
        self.window = window
        self.context_embedding = nn.Embedding(vocab_size, backbone_dim)
        nn.init.zeros_(self.context_embedding.weight)  # word2vec starts the output vectors at zero
        self.vocab_size = vocab_size

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        return self.backbone(ids)

    @torch.no_grad()
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        real = (ids >= FIRST_REGULAR_ID).unsqueeze(-1).float()
        return (self.backbone(ids) * real).sum(dim=1) / real.sum(dim=1).clamp_min(1)

    def project(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids)

    @torch.no_grad()
    def word_vectors(self) -> torch.Tensor:
        """[V, D]: the vector of every vocabulary entry (similar-words looks here)."""
        return self.backbone.token_embedding.weight

    def pair_score(self, words: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """The model's compatibility of word ids with context ids (elementwise)."""
        return (self.backbone(words) * self.context_embedding(contexts)).sum(-1)

    @torch.no_grad()
    def sentence_energy(self, ids: torch.Tensor) -> torch.Tensor:
        """E(s) [B] = -sum over word pairs within the window of log sigma(score): low when
        the words of the sentence are ones that co-occur."""
        words, contexts, _, rows = window_pairs(ids, self.window, both_orders=False)
        scores = -nn.functional.logsigmoid(self.pair_score(words, contexts))
        return torch.zeros(len(ids), device=ids.device).index_add_(0, rows, scores)


class Word2Vec(StaticWordModel):
    """Skip-gram with negative sampling (Mikolov, Sutskever, Chen, Corrado, Dean, NeurIPS
    2013, eq. 4): every word predicts the words up to ``window`` positions away through
    sigma(v'_o . v_c) against ``negatives`` words drawn from the unigram distribution
    raised to 3/4. Input vectors v are the word embeddings; output vectors v' start at
    zero. The pairs of a step are those of its sequences; the noise words are drawn from
    the step's seeded generator. Paper settings: 300 dimensions, window 5, 5-20 negatives.

    Energy of a sentence: -sum over its word pairs within the window of log sigma(v'_o . v_c).
    """

    name = "word2vec"
    summary = "static word vectors: skip-gram with negative sampling (Mikolov et al. 2013)"

    def __init__(self, backbone: StaticEmbedding, backbone_dim: int, window: int = 5, negatives: int = 5):
        super().__init__(backbone, backbone_dim, window)
        self.negatives = negatives
        self.noise = torch.ones(self.vocab_size)  # unigram^0.75, counted in on_train_start

    def on_train_start(self, training_views: TrainingViews) -> None:
        counts = torch.zeros(self.vocab_size)
        for views, _ in training_views():
            ids = views[0].cpu()
            counts += torch.bincount(ids[ids >= FIRST_REGULAR_ID], minlength=self.vocab_size).float()
        self.noise = counts.pow(0.75)

    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        if batch is None or batch.generator is None:
            raise ValueError("word2vec draws its noise words from Batch.generator")
        centers, contexts, _, _ = window_pairs(views[0], self.window)
        noise = torch.multinomial(self.noise.to(centers.device), len(centers) * self.negatives, replacement=True, generator=batch.generator)
        loss = sgns(self.backbone(centers), self.context_embedding(contexts), self.context_embedding(noise.view(len(centers), -1)))
        return StepOutput(loss, {"pairs": float(len(centers))})


class GloVe(StaticWordModel):
    """GloVe (Pennington, Socher, Manning, EMNLP 2014, eqs. 8-9): weighted least squares on
    the log co-occurrence counts, f(X_ij)(w_i . w~_j + b_i + b~_j - log X_ij)^2, f(x) =
    min(1, (x / 100)^0.75). X counts every pair of words up to ``window`` apart with weight
    1 / distance (sec. 4.2), symmetric, over the training documents, once before training.
    Each step fits ``pairs_per_step`` non-zero entries drawn from the step's seeded
    generator. The word vector is w + w~, as the paper reports (sec. 4.2).

    Energy of a sentence: -sum over its word pairs within the window of log sigma(w_i . w~_j + b_i + b~_j).
    """

    name = "glove"
    summary = "static word vectors: weighted least squares on log co-occurrence counts (Pennington et al. 2014)"

    def __init__(self, backbone: StaticEmbedding, backbone_dim: int, window: int = 10, pairs_per_step: int = 8192,
                 x_max: float = 100.0, alpha: float = 0.75):
        super().__init__(backbone, backbone_dim, window)
        nn.init.uniform_(self.context_embedding.weight, -0.5 / backbone_dim, 0.5 / backbone_dim)
        self.word_bias = nn.Parameter(torch.zeros(self.vocab_size))
        self.context_bias = nn.Parameter(torch.zeros(self.vocab_size))
        self.pairs_per_step, self.x_max, self.alpha = pairs_per_step, x_max, alpha
        self.pairs = torch.zeros(0, 2, dtype=torch.long)  # the non-zero (i, j) of X and their counts
        self.counts = torch.zeros(0)

    def on_train_start(self, training_views: TrainingViews) -> None:
        keys, weights = [], []
        for views, _ in training_views():
            centers, contexts, distances, _ = window_pairs(views[0].cpu(), self.window)
            keys.append(centers * self.vocab_size + contexts)
            weights.append(1.0 / distances.float())
        unique, inverse = torch.cat(keys).unique(return_inverse=True)
        self.counts = torch.zeros(len(unique)).index_add_(0, inverse, torch.cat(weights))
        self.pairs = torch.stack([unique // self.vocab_size, unique % self.vocab_size], dim=1)

    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        if batch is None or batch.generator is None:
            raise ValueError("glove draws its co-occurrence entries from Batch.generator")
        if len(self.counts) == 0:
            raise ValueError("glove has no co-occurrence counts: on_train_start was not called with the corpus")
        device = self.word_bias.device
        chosen = torch.randint(len(self.counts), (self.pairs_per_step,), generator=batch.generator, device=batch.generator.device)
        i, j = self.pairs[chosen.cpu()].to(device).unbind(1)
        loss = glove(self.backbone(i), self.context_embedding(j), self.word_bias[i], self.context_bias[j],
                     self.counts[chosen.cpu()].to(device), self.x_max, self.alpha)
        return StepOutput(loss)

    @torch.no_grad()
    def word_vectors(self) -> torch.Tensor:
        return self.backbone.token_embedding.weight + self.context_embedding.weight

    def pair_score(self, words: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        return super().pair_score(words, contexts) + self.word_bias[words] + self.context_bias[contexts]
