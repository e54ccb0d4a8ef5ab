"""Logistic-regression probe: separable data, agreement with scikit-learn, invariants."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from selfsup.evaluate import linear as linear_module
from selfsup.evaluate.linear import fit_logistic_regression, linear_probe_accuracy, predict_logistic_regression


def blobs(seed, num_per_class, dim, num_classes, spread, offset=5.0):
    generator = torch.Generator().manual_seed(seed)
    means = offset + torch.randn(num_classes, dim, generator=generator)
    labels = torch.arange(num_classes).repeat_interleave(num_per_class)
    features = means[labels] + spread * torch.randn(len(labels), dim, generator=generator)
    return features, labels


def test_separable_toy_data_is_fit_perfectly():
    train_x, train_y = blobs(0, 40, 10, 4, spread=0.1)
    test_x, test_y = train_x + 0.05 * torch.randn_like(train_x), train_y
    assert linear_probe_accuracy(train_x, train_y, test_x, test_y, 4) == 1.0


def test_agrees_with_sklearn_on_the_same_objective():
    # Overlapping classes, so the regulariser matters and accuracy is far from 100%.
    features, labels = blobs(1, 150, 20, 4, spread=1.5)
    train_x, train_y, test_x, test_y = features[::2], labels[::2], features[1::2], labels[1::2]
    l2 = 1e-2
    weight, bias = fit_logistic_regression(train_x, train_y, 4, l2=l2)

    # sklearn minimises C * sum CE + ||W||^2 / 2 on its inputs: C = 1 / (l2 N) is our
    # mean CE + l2 / 2 ||W||^2 on standardised features (population std, as StandardScaler).
    scaler = StandardScaler().fit(train_x.numpy().astype(np.float64))
    reference = LogisticRegression(C=1.0 / (l2 * len(train_y)), tol=1e-10, max_iter=10_000)
    reference.fit(scaler.transform(train_x.numpy().astype(np.float64)), train_y.numpy())
    expected_probabilities = reference.predict_proba(scaler.transform(test_x.numpy().astype(np.float64)))

    logits = test_x @ weight.T + bias
    np.testing.assert_allclose(torch.softmax(logits, dim=1).numpy(), expected_probabilities, atol=2e-3)
    ours = float((predict_logistic_regression(weight, bias, test_x) == test_y).double().mean())
    theirs = reference.score(scaler.transform(test_x.numpy().astype(np.float64)), test_y.numpy())
    assert 0.5 < ours < 0.99
    assert ours == pytest.approx(theirs, abs=0.02)


def test_standardisation_is_folded_into_weight_and_bias():
    train_x, train_y = blobs(2, 30, 6, 3, spread=2.0)
    weight, bias = fit_logistic_regression(train_x, train_y, 3, l2=1e-3)
    # Scaling or shifting a feature changes nothing once the fit has standardised it.
    scale = torch.tensor([1.0, 100.0, 0.01, 1.0, 5.0, 1.0])
    shift = torch.tensor([0.0, -3.0, 7.0, 0.0, 0.0, 1000.0])
    weight2, bias2 = fit_logistic_regression(train_x * scale + shift, train_y, 3, l2=1e-3)
    logits = train_x @ weight.T + bias
    torch.testing.assert_close((train_x * scale + shift) @ weight2.T + bias2, logits, atol=2e-3, rtol=1e-3)


def test_constant_features_and_stronger_l2():
    train_x, train_y = blobs(3, 30, 5, 3, spread=2.0)
    train_x = torch.cat([train_x, torch.full((len(train_y), 1), 4.0)], dim=1)
    weak_weight, _ = fit_logistic_regression(train_x, train_y, 3, l2=1e-4)
    strong_weight, strong_bias = fit_logistic_regression(train_x, train_y, 3, l2=1.0)
    assert torch.isfinite(strong_weight).all() and torch.isfinite(strong_bias).all()
    assert torch.count_nonzero(weak_weight[:, -1]) == 0  # a constant carries no information
    assert strong_weight.norm() < weak_weight.norm()


def test_deterministic_and_shapes():
    train_x, train_y = blobs(4, 20, 7, 5, spread=3.0)
    first = fit_logistic_regression(train_x, train_y, 5)
    second = fit_logistic_regression(train_x, train_y, 5)
    assert first[0].shape == (5, 7) and first[1].shape == (5,)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_bad_inputs_are_errors():
    train_x, train_y = blobs(5, 10, 4, 2, spread=1.0)
    with pytest.raises(ValueError, match="dimensions"):
        linear_probe_accuracy(train_x, train_y, train_x[:, :3], train_y, 2)
    with pytest.raises(ValueError, match="must lie in"):
        fit_logistic_regression(train_x, train_y + 1, 2)
    with pytest.raises(ValueError, match="l2"):
        fit_logistic_regression(train_x, train_y, 2, l2=-1.0)


def test_given_statistics_are_used():
    train_x, train_y = blobs(6, 30, 4, 3, spread=2.0)
    default = fit_logistic_regression(train_x, train_y, 3, l2=1e-2)
    mean, std = train_x.mean(0), train_x.std(0, unbiased=False)
    torch.testing.assert_close(fit_logistic_regression(train_x, train_y, 3, l2=1e-2, mean=mean, std=std), default)
    # One scale for all features: the same as fitting features divided by it by hand.
    scale = torch.tensor(7.0)
    weight, bias = fit_logistic_regression(train_x, train_y, 3, l2=1e-2, mean=mean, std=scale)
    by_hand, by_hand_bias = fit_logistic_regression(
        (train_x - mean) / scale, train_y, 3, l2=1e-2, mean=torch.zeros(4), std=torch.ones(4)
    )
    torch.testing.assert_close(train_x @ weight.T + bias, ((train_x - mean) / scale) @ by_hand.T + by_hand_bias)
    with pytest.raises(ValueError, match="both"):
        fit_logistic_regression(train_x, train_y, 3, mean=mean)


def test_fits_under_inference_mode():
    train_x, train_y = blobs(7, 20, 3, 2, spread=1.0)
    expected = fit_logistic_regression(train_x, train_y, 2)
    with torch.inference_mode():
        frozen_x = train_x.clone()  # an inference tensor, as features from a frozen encoder
        got = fit_logistic_regression(frozen_x, train_y, 2)
    torch.testing.assert_close(got, expected)


def test_the_probe_on_a_whole_split_stops_at_its_own_iteration_budget(monkeypatch):
    calls = []
    fit = linear_module.fit_logistic_regression
    monkeypatch.setattr(linear_module, "fit_logistic_regression", lambda *a, **kw: calls.append(kw) or fit(*a, **kw))
    x, y = torch.randn(40, 3), torch.arange(40) % 2
    linear_module.linear_probe_accuracy(x, y, x, y, 2)
    linear_module.linear_probe_accuracy(x, y, x, y, 2, max_iter=7)
    assert [c["max_iter"] for c in calls] == [linear_module.PROBE_MAX_ITER, 7]
    assert linear_module.PROBE_MAX_ITER < linear_module.DEFAULT_MAX_ITER
