"""Contrastive losses: energies of positive pairs pushed down, of negatives pushed up."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup import distributed


def info_nce(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric NT-Xent (SimCLR, Chen et al. 2020, eq. 1) averaged over the 2N views.

    With u = z / ||z|| for the 2N views of N images and s_ij = u_i . u_j,

        l(i, j) = -log  exp(s_ij / T) / sum_{k != i} exp(s_ik / T)

    where j is the other view of image i; the loss is the mean of l over all 2N anchors
    (both directions). Negatives are the other 2N - 2 views of the *global* batch: under
    torch.distributed the keys are gathered from every rank (gradients flow back through
    :func:`selfsup.distributed.gather_with_grad`), so the value and gradients equal those
    of one process holding the whole batch.

    Args:
        z_a, z_b: [B, D] embeddings of the two views of the same B images (row i of each
            is a positive pair).
        temperature: T in the equation above.
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2:
        raise ValueError(f"info_nce expects two [B, D] tensors of one shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    local = F.normalize(torch.cat([z_a, z_b]), dim=1)
    batch = z_a.shape[0]
    keys_a = distributed.gather_with_grad(local[:batch])
    keys_b = distributed.gather_with_grad(local[batch:])
    global_batch = keys_a.shape[0]
    keys = torch.cat([keys_a, keys_b])

    offset = distributed.rank() * batch
    rows = torch.arange(batch, device=z_a.device) + offset
    self_index = torch.cat([rows, rows + global_batch])
    positive_index = torch.cat([rows + global_batch, rows])

    logits = local @ keys.T / temperature
    logits[torch.arange(2 * batch, device=z_a.device), self_index] = float("-inf")
    return F.cross_entropy(logits, positive_index)
