"""Barlow Twins: Self-Supervised Learning via Redundancy Reduction."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.heads import ProjectionHead
from selfsup.losses import barlow_twins
from selfsup.methods.base import TwoViewMethod

# The projector width at which the paper's lambda = 0.0051 was tuned.
_REFERENCE_DIM = 8192


class BarlowTwins(TwoViewMethod):
    """Barlow Twins (Zbontar, Jing, Misra, LeCun, Deny, ICML 2021).

    Backbone and a 3-layer projector (paper: 8192-8192-8192, BN + ReLU on hidden layers)
    give z for both views; the loss drives the cross-correlation matrix of the batch-
    normalised embeddings to the identity (eqs. 1-2), with the paper's lambda = 0.0051 on
    the off-diagonal terms, as solo-learn uses it with 2048-wide heads. ``scale_lambda=True``
    uses lambda x 8192 / D instead: with D-dimensional embeddings the off-diagonal sum has
    D(D-1) terms against D diagonal ones, and the scaled weight keeps the paper's balance
    of the two at 8192. Paper recipe: LARS, lr 0.2 (weights) x batch/256, weight decay
    1.5e-6. selfsup's: LARS at lr 1.0 (BYOL's) and weight decay 1e-4 on 2048-wide heads;
    after 15 minutes on Fashion-MNIST it passed raw pixels at 1 and 10 labels per class
    where lr 0.3 with the scaled lambda stayed below (BENCHMARKS.md "Barlow Twins, SwAV,
    DeepCluster-v2 and DINO at small-batch recipes").

    Energy: F(x, y) = 1 - cos(z(x), z(y)).
    """

    name = "barlow-twins"
    summary = "regularised: cross-correlation of the two views' embeddings driven to identity (Zbontar et al. 2021)"
    train_recipe = {"optimizer": "lars", "lr": 1.0, "weight_decay": 1e-4, "epochs": 100}

    def __init__(self, backbone: nn.Module, backbone_dim: int, projection_dim: int = 2048, hidden_dim: int = 2048,
                 lambda_offdiag: float = 0.0051, scale_lambda: bool = False):
        super().__init__(backbone)
        self.projector = ProjectionHead(backbone_dim, hidden_dim, projection_dim, layers=3)
        self.lambda_offdiag = lambda_offdiag * (_REFERENCE_DIM / projection_dim if scale_lambda else 1.0)

    def pair_loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return barlow_twins(z_a, z_b, self.lambda_offdiag)
