"""VICReg: Variance-Invariance-Covariance Regularization."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.heads import ProjectionHead
from selfsup.losses import vicreg
from selfsup.methods.base import TwoViewMethod


class VICReg(TwoViewMethod):
    """VICReg (Bardes, Ponce, LeCun, ICLR 2022).

    Backbone and a 3-layer expander (paper: 8192-8192-8192) give z for both views; the loss
    (eq. 6) is 25 x invariance (MSE) + 25 x variance hinge (std >= 1 per dimension) + 1 x
    covariance (off-diagonal squared, / D), over the global batch. Paper recipe: LARS,
    lr 0.2 x batch/256 (base lr 0.2 in the reference code), weight decay 1e-6.

    Energy: F(x, y) = ||z(x) - z(y)||^2 / D, the invariance term.
    """

    name = "vicreg"
    summary = "regularised: invariance + variance hinge + covariance penalty (Bardes et al. 2022)"
    train_recipe = {"optimizer": "lars", "lr": 0.3, "weight_decay": 1e-4, "epochs": 100}

    def __init__(self, backbone: nn.Module, backbone_dim: int, projection_dim: int = 2048, hidden_dim: int = 2048,
                 sim_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0):
        super().__init__(backbone)
        self.projector = ProjectionHead(backbone_dim, hidden_dim, projection_dim, layers=3)
        self.weights = (sim_weight, var_weight, cov_weight)

    def pair_loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return vicreg(z_a, z_b, *self.weights)

    @torch.no_grad()
    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.project(x) - self.project(y)).pow(2).mean(dim=1)
