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


def moco_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo's InfoNCE (He et al. 2020, eq. 1; MoCo v2 T = 0.2):

        L = -mean_i log exp(q_i . k_i / T) / (exp(q_i . k_i / T) + sum_j exp(q_i . n_j / T))

    with q, k and the queued negatives n L2-normalised. ``k`` (from the momentum encoder)
    and ``queue`` [K, D] receive no gradient. Negatives come from the queue, so the loss
    needs nothing from other processes; the method enqueues keys gathered from every rank.
    """
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    negatives = F.normalize(queue.detach(), dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    logits = torch.cat([positive, q @ negatives.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def moco_v3_contrastive(q: torch.Tensor, k: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """One direction of MoCo v3's loss (Chen, Xie, He, ICCV 2021, Algorithm 1):

        ctr(q, k) = 2T * CE(q . k_all^T / T, own index)

    with q, k L2-normalised and k_all the keys of the global batch (gathered from every
    rank without gradient: keys come from the momentum encoder). The method sums
    ctr(q_a, k_b) + ctr(q_b, k_a). The factor 2T is the paper's, making the loss scale
    insensitive to T.
    """
    q = F.normalize(q, dim=1)
    keys = F.normalize(distributed.gather(k.detach()), dim=1)
    labels = torch.arange(len(q), device=q.device) + distributed.rank() * len(q)
    return F.cross_entropy(q @ keys.T / temperature, labels) * 2 * temperature
