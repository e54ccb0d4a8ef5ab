"""SIGReg (LeJEPA): the Epps-Pulley statistic against a direct NumPy integration of the paper's
formula, its behaviour on Gaussian and collapsed samples, the average over directions and
views, gradients, and the global batch under torch.distributed."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from selfsup import distributed
from selfsup.losses.sigreg import epps_pulley, quadrature, random_directions, sigreg


def epps_pulley_numpy(x: np.ndarray, t_max: float = 5.0, num_points: int = 17) -> float:
    """EP = N ∫ |φ̂(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt (LeJEPA eq. "Epps-Pulley", Algorithm 1),
    the ECF as a complex mean, the integral by the trapezoidal rule over the whole grid
    linspace(-t_max, t_max, num_points)."""
    t = np.linspace(-t_max, t_max, num_points)
    ecf = np.array([np.mean(np.exp(1j * tk * x)) for tk in t])
    integrand = np.abs(ecf - np.exp(-(t**2) / 2)) ** 2 * np.exp(-(t**2) / 2)
    return len(x) * float(np.sum((integrand[1:] + integrand[:-1]) / 2 * np.diff(t)))


def gaussian(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("t_max, num_points", [(5.0, 17), (3.0, 17), (1.0, 5), (5.0, 16)])
def test_epps_pulley_matches_a_direct_integration(t_max, num_points):
    x = 1.3 * gaussian(50, seed=1) + 0.4  # neither centred nor unit variance
    expected = epps_pulley_numpy(x.numpy(), t_max, num_points)
    assert epps_pulley(x, t_max, num_points).item() == pytest.approx(expected, rel=1e-10)


def test_epps_pulley_of_columns_is_the_statistic_of_each_column():
    x = gaussian(40, 3, seed=2) * torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    statistics = epps_pulley(x)
    assert statistics.shape == (3,)
    for column in range(3):
        assert statistics[column].item() == pytest.approx(epps_pulley_numpy(x[:, column].numpy()), rel=1e-10)


def test_quadrature_integrates_the_window():
    # Σ c_k = ∫_{-5}^{5} exp(-t^2/2) dt by the trapezoidal rule: close to sqrt(2π).
    _, weights = quadrature()
    assert weights.sum().item() == pytest.approx(np.sqrt(2 * np.pi), rel=1e-3)


def test_statistic_is_small_for_gaussian_samples_and_large_for_collapsed_ones():
    # For N(0, 1) samples E[EP] = ∫ w(t) (1 - exp(-t^2)) dt ≈ 1.06 whatever N (the paper's
    # Theorem 6 bias): the statistic does not grow with N. A collapsed sample grows as N.
    t = np.linspace(-5, 5, 17)
    integrand = np.exp(-(t**2) / 2) * (1 - np.exp(-(t**2)))
    bias = float(np.sum((integrand[1:] + integrand[:-1]) / 2 * np.diff(t)))
    assert 0.3 < epps_pulley(gaussian(20_000, seed=3)).item() < 5.0
    assert epps_pulley(torch.zeros(20_000, dtype=torch.float64)).item() > 5_000  # all equal
    assert epps_pulley(3 * gaussian(20_000, seed=3)).item() > 1_000  # wrong scale
    z = gaussian(1000, 64, seed=4)
    assert sigreg(z, generator=torch.Generator().manual_seed(5), num_slices=256).item() == pytest.approx(bias, abs=0.4)
    low_rank = gaussian(1000, 2, seed=6) @ gaussian(2, 64, seed=7) / np.sqrt(2)
    collapsed = torch.ones(1000, 64, dtype=torch.float64)
    for degenerate in (low_rank, collapsed):
        assert sigreg(degenerate, generator=torch.Generator().manual_seed(5), num_slices=256).item() > 50 * bias


def test_statistic_ignores_the_order_of_the_samples():
    z = gaussian(64, 8, seed=8)
    directions = random_directions(8, 32, torch.Generator().manual_seed(9), dtype=torch.float64)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(10))
    assert sigreg(z[order], directions).item() == pytest.approx(sigreg(z, directions).item(), rel=1e-12)
    x = z[:, 0]
    assert epps_pulley(x[order]).item() == pytest.approx(epps_pulley(x).item(), rel=1e-12)


def test_directions_are_unit_and_redrawn_from_the_generator():
    first = random_directions(10, 20, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert first.shape == (10, 20)
    assert torch.allclose(first.norm(dim=0), torch.ones(20, dtype=torch.float64))
    assert torch.equal(first, random_directions(10, 20, torch.Generator().manual_seed(0), dtype=torch.float64))
    assert not torch.allclose(first, random_directions(10, 20, torch.Generator().manual_seed(1), dtype=torch.float64))


def test_sigreg_is_the_mean_over_directions_and_views_of_the_statistic():
    z = gaussian(3, 30, 6, seed=11)  # 3 views of 30 samples
    directions = random_directions(6, 5, torch.Generator().manual_seed(12), dtype=torch.float64)
    per_view = []
    for view in z:
        per_direction = [epps_pulley_numpy((view @ directions[:, m]).numpy()) for m in range(5)]
        assert sigreg(view, directions).item() == pytest.approx(np.mean(per_direction), rel=1e-10)
        per_view.append(np.mean(per_direction))
    assert sigreg(z, directions).item() == pytest.approx(np.mean(per_view), rel=1e-10)
    # Drawn from a generator: the same as passing the directions drawn from it.
    drawn = sigreg(z, generator=torch.Generator().manual_seed(12), num_slices=5)
    assert drawn.item() == pytest.approx(sigreg(z, directions).item(), rel=1e-6)


def test_gradients_are_finite_even_for_collapsed_embeddings():
    for z in (gaussian(32, 8, seed=13), torch.zeros(32, 8, dtype=torch.float64), 1e4 * gaussian(32, 8, seed=14)):
        z = z.clone().requires_grad_()
        sigreg(z, generator=torch.Generator().manual_seed(0), num_slices=16).backward()
        assert torch.isfinite(z.grad).all()
    # The gradient pushes a too-narrow sample outwards: a descent step lowers the statistic.
    z = (0.1 * gaussian(256, 4, seed=15)).requires_grad_()
    directions = random_directions(4, 16, torch.Generator().manual_seed(16), dtype=torch.float64)
    before = sigreg(z, directions)
    before.backward()
    after = sigreg(z.detach() - 0.01 * z.grad, directions)
    assert after.item() < before.item()


def test_float32_and_bad_shapes():
    z = gaussian(16, 4, seed=17)
    directions = random_directions(4, 8, torch.Generator().manual_seed(0), dtype=torch.float64)
    single = sigreg(z.float(), directions.float())
    assert single.dtype == torch.float32
    assert single.item() == pytest.approx(sigreg(z, directions).item(), rel=1e-4)
    with pytest.raises(ValueError, match="directions or a generator"):
        sigreg(z)
    with pytest.raises(ValueError, match=r"directions must be \[4, M\]"):
        sigreg(z, directions[:3])
    with pytest.raises(ValueError, match="samples"):
        epps_pulley(torch.zeros(2, 3, 4))


# ---------------------------------------------------------------- the global batch over 2 processes
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, z: torch.Tensor, directions: torch.Tensor, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        share = z.shape[1] // WORLD
        local = z[:, rank * share : (rank + 1) * share].clone().requires_grad_()
        given = sigreg(local, directions)
        (given / WORLD).backward()  # DDP averages gradients over ranks
        # Directions drawn from each rank's own generator: every rank uses rank 0's draw.
        drawn = sigreg(local.detach(), generator=torch.Generator().manual_seed(100 + rank), num_slices=7)
        results[rank] = (distributed.all_reduce_mean(given.detach()).item(), given.item(), local.grad.clone(), drawn.item())
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_split_over_processes_equals_one_process_on_the_whole_batch():
    z = gaussian(2, 12, 5, seed=18)  # 2 views of 12 samples, split 6 + 6
    directions = random_directions(5, 7, torch.Generator().manual_seed(19), dtype=torch.float64)
    whole = z.clone().requires_grad_()
    expected = sigreg(whole, directions)
    expected.backward()
    expected_drawn = sigreg(z, generator=torch.Generator().manual_seed(100), num_slices=7).item()

    results = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), z, directions, results), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        mean, value, grad, drawn = results[rank]
        assert value == pytest.approx(expected.item(), rel=1e-12)  # every rank sees the global batch
        assert mean == pytest.approx(expected.item(), rel=1e-12)
        assert torch.allclose(grad, whole.grad[:, rank * 6 : (rank + 1) * 6], atol=1e-12)
        assert drawn == pytest.approx(expected_drawn, rel=1e-6)
