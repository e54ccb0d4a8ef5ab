import math

import numpy as np
import pytest
import torch

from selfsup.losses import (
    cross_view_cross_entropy,
    deepcluster,
    dino,
    dino_center,
    sinkhorn,
    swav,
    swav_multicrop,
)


def cosine_scores(batch: int, prototypes: int, seed: int, dim: int = 8) -> torch.Tensor:
    """z . C for L2-normalised embeddings and prototypes, as SwAV feeds Sinkhorn."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=1)
    c = torch.nn.functional.normalize(torch.randn(prototypes, dim, generator=generator, dtype=torch.float64), dim=1)
    return z @ c.T


def sinkhorn_numpy(scores: np.ndarray, epsilon: float, iterations: int) -> np.ndarray:
    """Algorithm 1 of the SwAV paper, line by line (no stabilising shift)."""
    q = np.exp(scores / epsilon).T
    q /= q.sum()
    k, b = q.shape
    r, c = np.ones(k) / k, np.ones(b) / b
    for _ in range(iterations):
        q *= (r / q.sum(axis=1))[:, None]
        q *= (c / q.sum(axis=0))[None, :]
    return (q / q.sum(axis=0, keepdims=True)).T


def logsumexp(x: np.ndarray, axis=None, keepdims=False) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    out = m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def sinkhorn_log_domain(scores: np.ndarray, epsilon: float, iterations: int) -> np.ndarray:
    """The same iterations on log Q, which never overflows."""
    log_q = scores.T / epsilon
    log_q -= logsumexp(log_q)
    k, b = log_q.shape
    for _ in range(iterations):
        log_q -= logsumexp(log_q, axis=1, keepdims=True) + math.log(k)
        log_q -= logsumexp(log_q, axis=0, keepdims=True) + math.log(b)
    return np.exp(log_q + math.log(b)).T


@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_sinkhorn_matches_the_paper_algorithm(iterations):
    scores = cosine_scores(12, 5, seed=0)
    expected = sinkhorn_numpy(scores.numpy(), 0.05, iterations)
    codes = sinkhorn(scores, epsilon=0.05, iterations=iterations)
    assert codes.dtype == torch.float64
    np.testing.assert_allclose(codes.numpy(), expected, rtol=1e-10, atol=0)


def test_sinkhorn_marginals():
    batch, prototypes = 24, 6
    scores = cosine_scores(batch, prototypes, seed=1)
    # The last step normalises the samples, so each code sums to 1 exactly ...
    codes = sinkhorn(scores)
    assert torch.allclose(codes.sum(dim=1), torch.ones(batch, dtype=torch.float64), atol=1e-12)
    # ... while after 3 iterations the prototypes hold only roughly B / K each;
    equal_share = torch.full((prototypes,), batch / prototypes, dtype=torch.float64)
    assert not torch.allclose(codes.sum(dim=0), equal_share, atol=1e-3)
    # with many iterations the partition becomes equal.
    balanced = sinkhorn(scores, iterations=500)
    assert torch.allclose(balanced.sum(dim=1), torch.ones(batch, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(balanced.sum(dim=0), equal_share, atol=1e-8)


def test_sinkhorn_closed_forms():
    # Constant scores: every code is uniform.
    assert torch.allclose(sinkhorn(torch.full((7, 4), 0.3, dtype=torch.float64)), torch.full((7, 4), 0.25, dtype=torch.float64))
    # Scores 1 on a permutation (B = K): exp(scores / eps) already has equal row and column
    # sums, so every iteration keeps it and the codes are exp(P / eps) / (e^(1/eps) + K - 1).
    epsilon, size = 0.5, 5
    permutation = torch.eye(size, dtype=torch.float64)[torch.tensor([3, 0, 4, 1, 2])]
    expected = torch.exp(permutation / epsilon) / (math.exp(1 / epsilon) + size - 1)
    assert torch.allclose(sinkhorn(permutation, epsilon=epsilon), expected, atol=1e-14)


def test_sinkhorn_is_stable_where_exp_overflows():
    # float32 scores / epsilon up to 98: exp overflows float32 (max ~ e^88.7); the shifted
    # computation still gives the codes of the log-domain formulation.
    scores = cosine_scores(16, 5, seed=0, dim=3)
    codes = sinkhorn(scores.float(), epsilon=0.01)
    assert torch.isinf(torch.exp(scores.float() / 0.01)).any()
    assert codes.dtype == torch.float32 and torch.isfinite(codes).all()
    expected = sinkhorn_log_domain(scores.float().double().numpy(), 0.01, 3)
    np.testing.assert_allclose(codes.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_sinkhorn_upcasts_half_precision_and_keeps_no_graph():
    scores = cosine_scores(10, 4, seed=3).to(torch.bfloat16).requires_grad_()
    codes = sinkhorn(scores)
    assert codes.dtype == torch.float32 and not codes.requires_grad
    expected = sinkhorn_numpy(scores.detach().double().numpy(), 0.05, 3)
    np.testing.assert_allclose(codes.numpy(), expected, rtol=1e-4, atol=1e-6)


def cross_entropy_loop(target: np.ndarray, logits: np.ndarray) -> float:
    """mean_b -sum_k target[b, k] log softmax(logits[b])_k with explicit loops."""
    total = 0.0
    for b in range(len(target)):
        normaliser = sum(math.exp(x) for x in logits[b])
        total += -sum(target[b, k] * math.log(math.exp(logits[b, k]) / normaliser) for k in range(target.shape[1]))
    return total / len(target)


def random_views(count: int, batch: int, classes: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return list(torch.randn(count, batch, classes, generator=generator, dtype=torch.float64))


def test_cross_view_cross_entropy_matches_a_loop_over_pairs():
    targets = [torch.softmax(view, dim=1) for view in random_views(2, 5, 4, seed=4)]
    logits = random_views(5, 5, 4, seed=5)
    pairs = [(i, v) for i in range(2) for v in range(5) if v != i]
    expected = sum(cross_entropy_loop(targets[i].numpy(), logits[v].numpy()) for i, v in pairs) / len(pairs)
    assert cross_view_cross_entropy(targets, logits).item() == pytest.approx(expected, rel=1e-12)


def test_cross_view_cross_entropy_needs_another_view():
    with pytest.raises(ValueError):
        cross_view_cross_entropy(random_views(1, 3, 2, seed=0), random_views(1, 3, 2, seed=1))
    with pytest.raises(ValueError):
        cross_view_cross_entropy(random_views(3, 3, 2, seed=0), random_views(2, 3, 2, seed=1))


def test_swav_is_the_swapped_prediction_and_codes_get_no_gradient():
    temperature = 0.1
    scores_a, scores_b = (view.requires_grad_() for view in random_views(2, 6, 5, seed=6))
    codes_a, codes_b = (torch.softmax(view, dim=1).requires_grad_() for view in random_views(2, 6, 5, seed=7))
    a, b = scores_a.detach().numpy() / temperature, scores_b.detach().numpy() / temperature
    expected = 0.5 * (cross_entropy_loop(codes_a.detach().numpy(), b) + cross_entropy_loop(codes_b.detach().numpy(), a))
    loss = swav(scores_a, scores_b, codes_a, codes_b, temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert codes_a.grad is None and codes_b.grad is None
    assert scores_a.grad.abs().sum() > 0 and scores_b.grad.abs().sum() > 0


def test_swav_multicrop_matches_a_loop():
    temperature = 0.1
    scores = random_views(4, 5, 6, seed=8)
    codes = [sinkhorn(view) for view in scores[:2]]
    expected = 0.0
    for i in range(2):  # the reference: mean over the other views, then over the code views
        others = [v for v in range(4) if v != i]
        expected += sum(cross_entropy_loop(codes[i].numpy(), scores[v].numpy() / temperature) for v in others) / 3
    expected /= 2
    assert swav_multicrop(scores, codes, temperature).item() == pytest.approx(expected, rel=1e-12)


def test_dino_matches_a_loop_and_sends_no_gradient_to_the_teacher():
    student = [view.requires_grad_() for view in random_views(4, 3, 5, seed=9)]
    teacher = [view.requires_grad_() for view in random_views(2, 3, 5, seed=10)]
    center = torch.tensor([0.3, -0.2, 0.1, 0.0, 0.5], dtype=torch.float64)
    expected, pairs = 0.0, 0
    for i in range(2):
        t = (teacher[i].detach().numpy() - center.numpy()) / 0.04
        target = np.exp(t) / np.exp(t).sum(axis=1, keepdims=True)
        for v in range(4):
            if v != i:
                expected += cross_entropy_loop(target, student[v].detach().numpy() / 0.1)
                pairs += 1
    loss = dino(student, teacher, center, student_temperature=0.1, teacher_temperature=0.04)
    assert loss.item() == pytest.approx(expected / pairs, rel=1e-12)
    loss.backward()
    assert all(view.grad is None for view in teacher)
    assert all(view.grad.abs().sum() > 0 for view in student)


def test_dino_of_identical_views_at_equal_temperature_is_the_entropy():
    # Logits T log p give softmax p: p = (1/2, 1/4, 1/4) has entropy 1.5 ln 2.
    temperature = 0.1
    logits = temperature * torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]], dtype=torch.float64))
    loss = dino([logits, logits, logits], [logits, logits], torch.zeros(3, dtype=torch.float64), temperature, temperature)
    assert loss.item() == pytest.approx(1.5 * math.log(2), rel=1e-12)


def test_dino_center_is_an_ema_of_the_mean_teacher_output():
    center = torch.tensor([1.0, -1.0], dtype=torch.float64)
    teacher = [torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64), torch.tensor([[5.0, 6.0], [7.0, 8.0]], dtype=torch.float64)]
    # Mean over the 4 rows: (4, 5); 0.9 * (1, -1) + 0.1 * (4, 5) = (1.3, -0.4).
    new_center = dino_center(center, teacher, momentum=0.9)
    assert torch.allclose(new_center, torch.tensor([1.3, -0.4], dtype=torch.float64), atol=1e-14)
    assert torch.equal(center, torch.tensor([1.0, -1.0], dtype=torch.float64))  # not modified in place


def test_deepcluster_matches_a_loop_and_ignores_unassigned_images():
    temperature = 0.1
    scores = random_views(3, 5, 4, seed=11)
    assignments = torch.tensor([2, -1, 0, 3, -1])
    expected = 0.0
    for view in scores:
        rows = [b for b in range(5) if assignments[b] >= 0]
        one_hot = np.eye(4)[[int(assignments[b]) for b in rows]]
        expected += cross_entropy_loop(one_hot, view.numpy()[rows] / temperature) / 3
    assert deepcluster(scores, assignments, temperature).item() == pytest.approx(expected, rel=1e-12)
    # The scores of unassigned images do not matter.
    changed = [view.clone() for view in scores]
    for view in changed:
        view[[1, 4]] = 100.0
    assert deepcluster(changed, assignments, temperature).item() == pytest.approx(expected, rel=1e-12)


def test_deepcluster_without_assignments_is_a_zero_with_a_graph():
    scores = [view.requires_grad_() for view in random_views(2, 3, 4, seed=12)]
    loss = deepcluster(scores, torch.full((3,), -1))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(scores[0].grad, torch.zeros(3, 4, dtype=torch.float64))
