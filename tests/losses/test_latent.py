import math

import numpy as np
import pytest
import torch

from selfsup.losses import (
    free_energy,
    gaussian_kl,
    l1_sparsity,
    norm_bound,
    prediction_cost,
    shrink,
)


def generator(seed):
    return torch.Generator().manual_seed(seed)


def test_prediction_cost_is_the_summed_squared_error_per_sample():
    y = torch.randn(3, 2, 1, 4, 5, generator=generator(0), dtype=torch.float64)
    prediction = torch.randn(3, 2, 1, 4, 5, generator=generator(1), dtype=torch.float64)
    expected = [((y[b] - prediction[b]).numpy() ** 2).sum() for b in range(3)]
    np.testing.assert_allclose(prediction_cost(y, prediction).numpy(), expected, rtol=1e-12)
    assert prediction_cost(y, y).abs().max().item() == 0.0


def test_l1_sparsity_and_norm_bound_closed_forms():
    z = torch.tensor([[3.0, -4.0], [0.0, 0.5], [-0.6, 0.8]])
    np.testing.assert_allclose(l1_sparsity(z).numpy(), [7.0, 0.5, 1.4], rtol=1e-6)
    # Norms 5, 0.5, 1: outside the unit ball only the first, by 4.
    np.testing.assert_allclose(norm_bound(z, 1.0).numpy(), [16.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(norm_bound(z, 0.0).numpy(), [25.0, 0.25, 1.0], rtol=1e-6)
    # Latents with more dimensions are flattened per sample.
    assert l1_sparsity(z.view(3, 1, 2)).tolist() == l1_sparsity(z).tolist()
    with pytest.raises(ValueError, match="radius"):
        norm_bound(z, -1.0)


def test_gaussian_kl_is_zero_at_the_prior_and_matches_the_formula():
    zeros = torch.zeros(4, 6)
    assert gaussian_kl(zeros, zeros).tolist() == [0.0] * 4
    mean = torch.randn(4, 6, generator=generator(2), dtype=torch.float64)
    log_variance = torch.randn(4, 6, generator=generator(3), dtype=torch.float64)
    m, lv = mean.numpy(), log_variance.numpy()
    # KL(N(m, s^2) || N(0, 1)) per dimension, written with s: log(1 / s) + (s^2 + m^2 - 1) / 2.
    variance = np.exp(lv)
    expected = (0.5 * np.log(1 / variance) + (variance + m**2) / 2 - 0.5).sum(axis=1)
    np.testing.assert_allclose(gaussian_kl(mean, log_variance).numpy(), expected, rtol=1e-12)
    assert (gaussian_kl(mean, log_variance) > 0).all()


def test_gaussian_kl_matches_a_monte_carlo_estimate():
    mean = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    log_variance = torch.tensor([[-0.5, 0.3]], dtype=torch.float64)
    posterior = torch.distributions.Normal(mean, (0.5 * log_variance).exp())
    prior = torch.distributions.Normal(torch.zeros(2, dtype=torch.float64), 1.0)
    samples = posterior.sample((200_000,))
    estimate = (posterior.log_prob(samples) - prior.log_prob(samples)).sum(-1).mean()
    assert gaussian_kl(mean, log_variance).item() == pytest.approx(estimate.item(), abs=0.01)


def test_shrink_matches_a_loop_and_is_the_l1_proximal_step():
    z = torch.randn(5, 7, generator=generator(4), dtype=torch.float64)
    threshold = 0.4
    expected = np.array(
        [
            [
                value - threshold if value > threshold else value + threshold if value < -threshold else 0.0
                for value in row
            ]
            for row in z.tolist()
        ]
    )
    np.testing.assert_allclose(shrink(z, threshold).numpy(), expected, rtol=1e-12)
    # prox(v) = argmin_u 1/2 (u - v)^2 + t |u|: no point of a fine grid does better.
    grid = torch.linspace(-4, 4, 80001, dtype=torch.float64)
    objective = 0.5 * (grid[:, None] - z.flatten()) ** 2 + threshold * grid[:, None].abs()
    best = grid[objective.argmin(dim=0)]
    np.testing.assert_allclose(shrink(z, threshold).flatten().numpy(), best.numpy(), atol=1e-4)
    # A tensor threshold broadcasts; zero is the identity.
    per_column = torch.linspace(0, 1, 7, dtype=torch.float64)
    assert torch.equal(shrink(z, per_column)[:, 0], z[:, 0])
    assert torch.equal(shrink(z, 0.0), z)
    with pytest.raises(ValueError, match="threshold"):
        shrink(z, -0.1)


def test_free_energy_zero_temperature_is_the_minimum():
    energies = torch.tensor([[3.0, 1.0, 2.0], [0.5, 0.7, -1.0]])
    assert free_energy(energies).tolist() == [1.0, -1.0]
    assert free_energy(energies, math.inf).tolist() == [1.0, -1.0]


def test_free_energy_soft_version_matches_a_naive_sum():
    energies = torch.randn(4, 6, generator=generator(5), dtype=torch.float64)
    for beta in (0.3, 1.0, 5.0):
        naive = [
            -1 / beta * math.log(sum(math.exp(-beta * e) for e in row) / len(row))
            for row in energies.tolist()
        ]
        np.testing.assert_allclose(free_energy(energies, beta).numpy(), naive, rtol=1e-12)


def test_free_energy_limits_and_bounds():
    energies = torch.randn(4, 6, generator=generator(6), dtype=torch.float64) * 3
    minimum, mean = energies.min(dim=1).values, energies.mean(dim=1)
    # Between the minimum and the mean; the mean as beta -> 0; the minimum as beta -> inf
    # (within log(K) / beta), without overflow for large beta.
    for beta in (0.01, 1.0, 100.0):
        soft = free_energy(energies, beta)
        assert (soft >= minimum - 1e-12).all() and (soft <= mean + 1e-12).all()
        assert (soft - minimum <= math.log(6) / beta + 1e-12).all()
    torch.testing.assert_close(free_energy(energies, 1e-6), mean, rtol=0, atol=1e-4)
    torch.testing.assert_close(free_energy(energies, 1e6), minimum, rtol=0, atol=1e-5)
    # K equal energies give that energy at every temperature.
    torch.testing.assert_close(free_energy(torch.full((2, 5), 2.5), 0.7), torch.full((2,), 2.5))
    with pytest.raises(ValueError, match="beta"):
        free_energy(energies, 0.0)
