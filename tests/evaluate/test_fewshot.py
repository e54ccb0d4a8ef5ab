"""Few-shot sampling (exact counts, determinism) and few-shot accuracy on toy data."""

import pytest
import torch

from selfsup.evaluate.fewshot import fewshot_accuracy, fewshot_indices


def labels_with_sizes(sizes, seed=0):
    labels = torch.cat([torch.full((size,), c) for c, size in enumerate(sizes)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


@pytest.mark.parametrize("shots", [1, 10, 100])
def test_draws_exactly_shots_per_class(shots):
    labels = labels_with_sizes([150, 200, 120, 300])
    indices = fewshot_indices(labels, 4, shots, seed=0)
    assert len(indices.unique()) == len(indices)
    assert torch.bincount(labels[indices], minlength=4).tolist() == [shots] * 4


def test_small_and_absent_classes_use_what_they_have():
    labels = labels_with_sizes([50, 3, 0, 20])
    counts = torch.bincount(labels[fewshot_indices(labels, 4, 10, seed=1)], minlength=4)
    assert counts.tolist() == [10, 3, 0, 10]


def test_deterministic_per_seed_different_across_seeds_and_nested():
    labels = labels_with_sizes([100] * 5)
    first = fewshot_indices(labels, 5, 10, seed=3)
    torch.testing.assert_close(first, fewshot_indices(labels, 5, 10, seed=3))
    assert set(first.tolist()) != set(fewshot_indices(labels, 5, 10, seed=4).tolist())
    # For one seed the 1-shot draw is part of the 10-shot draw.
    assert set(fewshot_indices(labels, 5, 1, seed=3).tolist()) <= set(first.tolist())


def separable(seed, num_per_class, num_classes=3, dim=8, noise=1.0):
    # Every dimension separates the classes (no pure-noise dimension): one example per
    # class is then enough.
    centres = 10.0 * torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(100))
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(num_per_class)
    return centres[labels] + noise * torch.randn(len(labels), dim, generator=generator), labels


def test_separable_toy_data_is_perfect_at_every_shot_count():
    train_x, train_y = separable(0, 120)
    test_x, test_y = separable(1, 30)
    result = fewshot_accuracy(train_x, train_y, test_x, test_y, 3, shots=(1, 10, 100), seeds=3)
    assert result == {shots: {"mean": 1.0, "std": 0.0} for shots in ("1", "10", "100")}


def test_mean_and_std_over_seeds():
    train_x, train_y = separable(2, 60, noise=15.0)
    test_x, test_y = separable(3, 100, noise=15.0)
    result = fewshot_accuracy(train_x, train_y, test_x, test_y, 3, shots=(1, 5), seeds=[0, 1, 2, 3])
    per_seed = [fewshot_accuracy(train_x, train_y, test_x, test_y, 3, shots=(1,), seeds=[s])["1"] for s in range(4)]
    means = torch.tensor([r["mean"] for r in per_seed], dtype=torch.float64)
    assert all(r["std"] == 0.0 for r in per_seed)
    assert result["1"]["mean"] == pytest.approx(float(means.mean()))
    assert result["1"]["std"] == pytest.approx(float(means.std()))  # sample std, N - 1
    assert result["1"]["std"] > 0.0
    assert 0.4 < result["1"]["mean"] < result["5"]["mean"] < 1.0


def test_bad_inputs_are_errors():
    train_x, train_y = separable(0, 10)
    with pytest.raises(ValueError, match="shots"):
        fewshot_accuracy(train_x, train_y, train_x, train_y, 3, shots=(0,))
    with pytest.raises(ValueError, match="seeds"):
        fewshot_accuracy(train_x, train_y, train_x, train_y, 3, seeds=0)


def test_features_are_scaled_as_a_whole_not_one_by_one():
    # Two informative dimensions and six near-constant ones: per-feature standardisation
    # would blow the tiny noise up to the signal's scale and one shot would then fail;
    # a single scale keeps it negligible.
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(2).repeat_interleave(100)
    signal = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])[labels] + torch.randn(200, 2, generator=generator)
    features = torch.cat([signal, 1e-3 * torch.randn(200, 6, generator=generator)], dim=1)
    result = fewshot_accuracy(features, labels, features, labels, 2, shots=(1,), seeds=5)
    assert result["1"]["mean"] == 1.0
    # ... and the result does not depend on the features' units.
    rescaled_features = 1000.0 * features + 3.0
    rescaled = fewshot_accuracy(rescaled_features, labels, rescaled_features, labels, 2, shots=(1,), seeds=5)
    assert rescaled == result
