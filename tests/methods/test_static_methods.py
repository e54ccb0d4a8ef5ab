"""word2vec and GloVe: the pairs they learn from, the counts they take before training."""

import pytest
import torch

from selfsup.backbones.text import StaticEmbedding
from selfsup.methods import Batch, build_method
from selfsup.methods.static import GloVe, Word2Vec, window_pairs

IDS = torch.tensor([[2, 5, 6, 7, 3, 0], [2, 8, 5, 3, 0, 0]])  # [CLS] ... [SEP] [PAD]


def test_window_pairs_are_every_pair_of_real_tokens_within_the_window_both_ways():
    centers, contexts, distances, _ = window_pairs(IDS, window=2)
    pairs = sorted(zip(centers.tolist(), contexts.tolist(), distances.tolist()))
    expected = sorted([(5, 6, 1), (6, 5, 1), (6, 7, 1), (7, 6, 1), (5, 7, 2), (7, 5, 2), (8, 5, 1), (5, 8, 1)])
    assert pairs == expected


def _model(cls, **options):
    torch.manual_seed(0)
    return build_method({"name": cls.name, **options}, StaticEmbedding(10, 4), 4)


def test_word2vec_noise_is_the_unigram_distribution_to_the_three_quarters():
    model = _model(Word2Vec, window=2, negatives=3)
    model.on_train_start(lambda: iter([([IDS], torch.arange(2))]))
    counts = torch.tensor([0, 0, 0, 0, 0, 2, 1, 1, 1, 0], dtype=torch.float)
    assert torch.allclose(model.noise, counts.pow(0.75))
    with pytest.raises(ValueError, match="generator"):
        model([IDS])


def test_glove_counts_cooccurrences_weighted_by_one_over_distance():
    model = _model(GloVe, window=2, pairs_per_step=4)
    model.on_train_start(lambda: iter([([IDS], torch.arange(2))]))
    table = {tuple(pair): float(count) for pair, count in zip(model.pairs.tolist(), model.counts)}
    assert table[(5, 6)] == table[(6, 5)] == 1.0 and table[(5, 7)] == 0.5 and table[(8, 5)] == 1.0
    assert len(table) == 8
    output = model([IDS], batch=Batch(generator=torch.Generator().manual_seed(0)))
    output.loss.backward()
    assert model.word_bias.grad is not None and torch.isfinite(output.loss)
