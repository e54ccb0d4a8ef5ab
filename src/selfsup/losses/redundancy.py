"""Regularised joint-embedding losses: invariance plus a term that keeps embeddings informative."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup import distributed


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    size = matrix.shape[0]
    return matrix.flatten()[:-1].view(size - 1, size + 1)[:, 1:].flatten()


def barlow_twins(z_a: torch.Tensor, z_b: torch.Tensor, lambda_offdiag: float = 0.0051) -> torch.Tensor:
    """Barlow Twins (Zbontar, Jing, Misra, LeCun, Deny, ICML 2021), eqs. 1-2:

        C_ij = sum_b zn_a[b, i] zn_b[b, j] / N,   zn = (z - mean_batch) / std_batch
        L = sum_i (1 - C_ii)^2 + lambda_offdiag * sum_{i != j} C_ij^2

    ``zn`` is batch normalisation without affine parameters (biased variance, eps 1e-5,
    as the reference code's ``nn.BatchNorm1d(affine=False)``). The statistics and C are
    taken over the global batch under torch.distributed. The paper's lambda 0.0051 is for
    an 8192-d projector; for D-d embeddings the off-diagonal sum has D(D-1) terms against D
    on the diagonal, so scaling lambda by 8192 / D keeps their balance (done by the method).
    """
    z_a = distributed.gather_with_grad(z_a)
    z_b = distributed.gather_with_grad(z_b)
    batch = z_a.shape[0]
    z_a = F.batch_norm(z_a, None, None, training=True, eps=1e-5)
    z_b = F.batch_norm(z_b, None, None, training=True, eps=1e-5)
    correlation = z_a.T @ z_b / batch
    on_diagonal = (1 - torch.diagonal(correlation)).pow(2).sum()
    off_diagonal = _off_diagonal(correlation).pow(2).sum()
    return on_diagonal + lambda_offdiag * off_diagonal


def vicreg(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    eps: float = 1e-4,
) -> torch.Tensor:
    """VICReg (Bardes, Ponce, LeCun, ICLR 2022), eqs. 1-6:

        s(Z, Z')  = mean_b ||z_b - z'_b||^2 / D                (invariance, MSE)
        v(Z)      = mean_j max(0, 1 - sqrt(Var(z^j) + eps))     (variance hinge, per branch)
        c(Z)      = sum_{i != j} Cov(Z)_ij^2 / D                (covariance, per branch)
        L = sim_weight s + var_weight (v(Z) + v(Z')) / 2 + cov_weight (c(Z) + c(Z'))

    Variance and covariance use the unbiased estimator over the global batch, as the
    reference code (which all-gathers both branches before every term).
    """
    z_a = distributed.gather_with_grad(z_a)
    z_b = distributed.gather_with_grad(z_b)
    batch, dim = z_a.shape
    invariance = F.mse_loss(z_a, z_b)
    z_a = z_a - z_a.mean(dim=0)
    z_b = z_b - z_b.mean(dim=0)
    std_a = torch.sqrt(z_a.var(dim=0) + eps)
    std_b = torch.sqrt(z_b.var(dim=0) + eps)
    variance = (F.relu(1 - std_a).mean() + F.relu(1 - std_b).mean()) / 2
    cov_a = z_a.T @ z_a / (batch - 1)
    cov_b = z_b.T @ z_b / (batch - 1)
    covariance = (_off_diagonal(cov_a).pow(2).sum() + _off_diagonal(cov_b).pow(2).sum()) / dim
    return sim_weight * invariance + var_weight * variance + cov_weight * covariance
