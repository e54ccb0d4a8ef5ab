"""The naive Siamese network: the textbook example of representation collapse."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.heads import ProjectionHead
from selfsup.losses import negative_cosine
from selfsup.methods.base import TwoViewMethod


class SiameseNaive(TwoViewMethod):
    """Shared encoder, positive pairs only: minimise -cos(z_a, z_b), nothing else.

    No negatives, no stop-gradient, no predictor, no regulariser: the energy of compatible
    pairs is pushed down and nothing keeps it up for incompatible ones, so the cheapest
    solution is a constant embedding (the collapse that contrastive, asymmetric and
    regularised methods each prevent in their own way; see SimSiam, Chen & He 2021,
    sec. 4.1, for the same network collapsing once stop-gradient is removed). Here as a
    diagnostic: the collapse detector must flag it, and its energy AUC falls to chance.
    """

    name = "siamese-naive"
    summary = "naive Siamese: positive pairs only, no negatives or stop-gradient (collapses)"

    def __init__(self, backbone: nn.Module, backbone_dim: int, projection_dim: int = 128, hidden_dim: int = 2048):
        super().__init__(backbone)
        self.projector = ProjectionHead(backbone_dim, hidden_dim, projection_dim, layers=2)

    def pair_loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return negative_cosine(z_a, z_b, stop_gradient=False)
