"""Losses of the Siamese methods that have no negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def negative_cosine(p: torch.Tensor, z: torch.Tensor, stop_gradient: bool = True) -> torch.Tensor:
    """D(p, z) = -mean_i cos(p_i, sg(z_i)) (SimSiam, Chen & He 2021, eq. 1).

    The stop-gradient on ``z`` is what keeps SimSiam from collapsing; ``stop_gradient=False``
    gives the naive Siamese objective (positive pairs only, nothing to hold the energy up
    elsewhere), which collapses.
    """
    if stop_gradient:
        z = z.detach()
    return -F.cosine_similarity(p, z, dim=-1).mean()


def byol_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's regression loss (Grill et al. 2020, eq. 2): mean_i ||p_i/|p_i| - sg(z_i)/|z_i| ||^2
    = 2 - 2 cos(p_i, z_i), with the stop-gradient on the target ``z``."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()
