import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import paws, sharpen, snn


def snn_numpy(queries: np.ndarray, supports: np.ndarray, labels: np.ndarray, temperature: float) -> np.ndarray:
    """PAWS eq. 1 with loops over queries and supports."""
    out = np.zeros((len(queries), labels.shape[1]))
    for i, query in enumerate(queries):
        query = query / np.linalg.norm(query)
        weights = [math.exp(query @ (s / np.linalg.norm(s)) / temperature) for s in supports]
        for j, weight in enumerate(weights):
            out[i] += weight / sum(weights) * labels[j]
    return out


def sharpen_numpy(p: np.ndarray, temperature: float) -> np.ndarray:
    powered = p ** (1 / temperature)
    return powered / powered.sum(axis=1, keepdims=True)


def paws_numpy(views, supports, labels, temperature=0.1, sharpen_temperature=0.25, me_max=True):
    """PAWS as in the reference: swapped sharpened targets for the two global views, their
    mean for the local views, entries < 1e-4 zeroed, me-max over every view's predictions.
    Returns the loss and how many target entries were zeroed."""
    predictions = [snn_numpy(view, supports, labels, temperature) for view in views]
    target_0, target_1 = sharpen_numpy(predictions[1], sharpen_temperature), sharpen_numpy(predictions[0], sharpen_temperature)
    targets = [target_0, target_1] + [(target_0 + target_1) / 2] * (len(views) - 2)
    zeroed = sum(int((t < 1e-4).sum()) for t in targets)
    total, rows = 0.0, 0
    for target, prediction in zip(targets, predictions):
        for b in range(len(target)):
            total += -sum(target[b, k] * math.log(prediction[b, k]) for k in range(labels.shape[1]) if target[b, k] >= 1e-4)
            rows += 1
    loss = total / rows
    if me_max:
        marginal = np.concatenate([sharpen_numpy(p, sharpen_temperature) for p in predictions]).mean(axis=0)
        loss += math.log(labels.shape[1]) + sum(m * math.log(m) for m in marginal)
    return loss, zeroed


def problem(views: int = 4, batch: int = 3, dim: int = 4, supports: int = 6, classes: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    anchors = list(torch.randn(views, batch, dim, generator=generator, dtype=torch.float64))
    support = torch.randn(supports, dim, generator=generator, dtype=torch.float64)
    labels = F.one_hot(torch.arange(supports) % classes, classes).double()
    return anchors, support, labels


def test_snn_matches_a_loop():
    anchors, supports, labels = problem()
    labels = 0.9 * labels + 0.1 / 3  # smoothed labels work as well
    expected = snn_numpy(anchors[0].numpy(), supports.numpy(), labels.numpy(), 0.1)
    np.testing.assert_allclose(snn(anchors[0], supports, labels, 0.1).numpy(), expected, rtol=1e-12)


def test_sharpen_matches_numpy_and_closed_forms():
    p = torch.softmax(torch.randn(5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64), dim=1)
    np.testing.assert_allclose(sharpen(p, 0.25).numpy(), sharpen_numpy(p.numpy(), 0.25), rtol=1e-12)
    assert torch.allclose(sharpen(p, 1.0), p, atol=1e-15)  # T = 1: identity
    assert torch.allclose(sharpen(p, 0.3).sum(dim=1), torch.ones(5, dtype=torch.float64), atol=1e-15)
    # Low temperature: the distribution approaches the one-hot of its argmax.
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]], dtype=torch.float64)
    assert torch.allclose(sharpen(p, 0.01), torch.tensor([[1.0, 0, 0], [0, 1, 0]], dtype=torch.float64), atol=1e-20)
    # Two classes: rho(a, 1 - a) = a^(1/T) / (a^(1/T) + (1 - a)^(1/T)); (0.75, 0.25) at T = 0.5 -> (0.9, 0.1).
    assert torch.allclose(sharpen(torch.tensor([[0.75, 0.25]], dtype=torch.float64), 0.5), torch.tensor([[0.9, 0.1]], dtype=torch.float64))
    # Sharpening a uniform distribution leaves it uniform.
    assert torch.allclose(sharpen(torch.full((2, 4), 0.25, dtype=torch.float64), 0.25), torch.full((2, 4), 0.25, dtype=torch.float64))


@pytest.mark.parametrize("me_max", [True, False])
@pytest.mark.parametrize("views", [2, 4])
def test_paws_matches_the_reference_formulation(me_max, views):
    anchors, supports, labels = problem(views=views)
    expected, zeroed = paws_numpy([a.numpy() for a in anchors], supports.numpy(), labels.numpy(), me_max=me_max)
    assert zeroed > 0  # the 1e-4 cut is exercised
    assert paws(anchors, supports, labels, me_max=me_max).item() == pytest.approx(expected, rel=1e-10)


def test_me_max_is_zero_for_a_uniform_marginal_and_log_c_for_a_one_hot_one():
    # Two supports e1 (class 0), e2 (class 1); each view holds e1 and e2: the predictions
    # are mirror images, so the mean sharpened prediction is (1/2, 1/2).
    eye = torch.eye(2, dtype=torch.float64)
    views = [eye.clone(), eye.clone(), eye.clone()]
    regulariser = paws(views, eye, eye) - paws(views, eye, eye, me_max=False)
    assert regulariser.item() == pytest.approx(0.0, abs=1e-12)
    # Every support of class 0 (of 3): every prediction and target is (1, 0, 0), the
    # cross-entropy is 0 and the me-max term log 3 - H((1, 0, 0)) = log 3.
    anchors, supports, _ = problem(classes=3)
    labels = torch.zeros(len(supports), 3, dtype=torch.float64)
    labels[:, 0] = 1
    assert paws(anchors, supports, labels, me_max=False).item() == pytest.approx(0.0, abs=1e-12)
    assert paws(anchors, supports, labels).item() == pytest.approx(math.log(3), rel=1e-12)


def test_paws_gradients_reach_anchors_and_supports_but_not_through_the_targets():
    anchors, supports, labels = problem(views=3, seed=2)
    anchors = [a.requires_grad_() for a in anchors]
    supports.requires_grad_()
    loss = paws(anchors, supports, labels)
    loss.backward()
    assert all(a.grad.abs().sum() > 0 for a in anchors) and supports.grad.abs().sum() > 0

    # The same loss with the targets given as constants has the same gradients.
    def predict(view, support):
        weights = torch.softmax(F.normalize(view, dim=1) @ F.normalize(support, dim=1).T / 0.1, dim=1)
        return weights @ labels

    copies = [a.detach().clone().requires_grad_() for a in anchors]
    support_copy = supports.detach().clone().requires_grad_()
    with torch.no_grad():
        sharp = [sharpen_numpy(predict(a, support_copy).numpy(), 0.25) for a in copies[:2]]
        constants = [sharp[1], sharp[0], (sharp[0] + sharp[1]) / 2]
        constants = [torch.from_numpy(np.where(t < 1e-4, 0.0, t)) for t in constants]
    predictions = [predict(a, support_copy) for a in copies]
    cross_entropy = sum(-(t * p.log()).sum(dim=1).mean() for t, p in zip(constants, predictions)) / 3
    marginal = torch.cat([sharpen(p, 0.25) for p in predictions]).mean(dim=0)
    constant_target_loss = cross_entropy + math.log(3) + (marginal * marginal.log()).sum()
    constant_target_loss.backward()
    assert constant_target_loss.item() == pytest.approx(loss.item(), rel=1e-12)
    for a, copy in zip(anchors, copies):
        assert torch.allclose(a.grad, copy.grad, atol=1e-12)
    assert torch.allclose(supports.grad, support_copy.grad, atol=1e-12)


def test_paws_needs_two_global_views():
    anchors, supports, labels = problem(views=1)
    with pytest.raises(ValueError, match="two global views"):
        paws(anchors, supports, labels)
