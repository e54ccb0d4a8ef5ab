import numpy as np
import pytest
import torch

from selfsup.losses import barlow_twins, byol_mse, moco_info_nce, vicreg


def barlow_numpy(z_a, z_b, lam):
    """Eqs. 1-2 of the Barlow Twins paper with explicit loops over the D x D entries."""
    n, d = z_a.shape
    za = (z_a - z_a.mean(0)) / np.sqrt(z_a.var(0) + 1e-5)
    zb = (z_b - z_b.mean(0)) / np.sqrt(z_b.var(0) + 1e-5)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(za[b, i] * zb[b, j] for b in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lam * c**2
    return loss


def vicreg_numpy(z_a, z_b, sim=25.0, var=25.0, cov=1.0):
    n, d = z_a.shape
    invariance = sum(((z_a[b] - z_b[b]) ** 2).sum() for b in range(n)) / (n * d)

    def variance(z):
        return np.mean([max(0.0, 1 - np.sqrt(z[:, j].var(ddof=1) + 1e-4)) for j in range(d)])

    def covariance(z):
        c = z - z.mean(0)
        total = 0.0
        for i in range(d):
            for j in range(d):
                if i != j:
                    total += (sum(c[b, i] * c[b, j] for b in range(n)) / (n - 1)) ** 2
        return total / d

    return sim * invariance + var * (variance(z_a) + variance(z_b)) / 2 + cov * (covariance(z_a) + covariance(z_b))


def test_barlow_twins_matches_the_paper_equation():
    z_a, z_b = torch.randn(2, 10, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = barlow_numpy(z_a.numpy(), z_b.numpy(), 0.0051)
    assert barlow_twins(z_a, z_b).item() == pytest.approx(expected, rel=1e-9)


def test_barlow_twins_closed_forms():
    # Identical, decorrelated (orthogonal, zero-mean, unit-variance) columns: C = I, loss = 0.
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    assert barlow_twins(z, z.clone()).item() == pytest.approx(0.0, abs=1e-4)
    # Anti-correlated views: C = -I, loss = D * (1 - (-1))^2 = 4 D.
    assert barlow_twins(z, -z).item() == pytest.approx(8.0, rel=1e-4)


def test_vicreg_matches_the_paper_equations():
    z_a, z_b = torch.randn(2, 9, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = vicreg_numpy(z_a.numpy(), z_b.numpy())
    assert vicreg(z_a, z_b).item() == pytest.approx(expected, rel=1e-9)


def test_vicreg_closed_form_for_collapsed_embeddings():
    # Constant embeddings: invariance 0, covariance 0, variance hinge 1 - sqrt(1e-4) per branch.
    z = torch.ones(8, 4, dtype=torch.float64)
    assert vicreg(z, z.clone()).item() == pytest.approx(25.0 * (1 - 0.01), rel=1e-9)


def test_byol_mse_closed_forms_and_stop_gradient():
    p = torch.tensor([[1.0, 0.0], [0.0, 3.0]], requires_grad=True)
    z = torch.tensor([[5.0, 0.0], [0.0, -1.0]], requires_grad=True)
    loss = byol_mse(p, z)
    assert loss.item() == pytest.approx((0.0 + 4.0) / 2)  # cos = 1 -> 0, cos = -1 -> 4
    loss.backward()
    assert z.grad is None and p.grad is not None


def test_moco_info_nce_matches_a_loop_and_ignores_key_gradients():
    generator = torch.Generator().manual_seed(2)
    q = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    k = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    queue = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    temperature = 0.2
    qn, kn = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(k, dim=1)
    nn_ = torch.nn.functional.normalize(queue, dim=1)
    expected = 0.0
    for i in range(4):
        positive = np.exp((qn[i] @ kn[i]).item() / temperature)
        negatives = sum(np.exp((qn[i] @ nn_[j]).item() / temperature) for j in range(7))
        expected += -np.log(positive / (positive + negatives)) / 4
    loss = moco_info_nce(q, k, queue, temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    loss.backward()
    assert k.grad is None and q.grad is not None
