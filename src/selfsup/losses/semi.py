"""Semi-supervised losses: a few labelled support samples turn the embeddings of unlabelled
views into class predictions, and views of one image must agree on them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from selfsup import distributed


def snn(queries: torch.Tensor, supports: torch.Tensor, support_labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """PAWS's soft nearest-neighbour classifier (Assran et al., ICCV 2021, eq. 1):

        p = softmax(q_hat . s_hat^T / T) Y

    with q_hat [B, D] and s_hat [S, D] L2-normalised and Y [S, C] the (possibly smoothed)
    one-hot labels of the supports. Returns [B, C], rows summing to 1.
    """
    queries = F.normalize(queries, dim=-1)
    supports = F.normalize(supports, dim=-1)
    return F.softmax(queries @ supports.T / temperature, dim=-1) @ support_labels


def sharpen(probabilities: torch.Tensor, temperature: float = 0.25) -> torch.Tensor:
    """rho(p)_k = p_k^(1/T) / sum_j p_j^(1/T) (PAWS, eq. 2), along the last dimension."""
    sharpened = probabilities ** (1 / temperature)
    return sharpened / sharpened.sum(dim=-1, keepdim=True)


def paws(
    anchors: Sequence[torch.Tensor],
    supports: torch.Tensor,
    support_labels: torch.Tensor,
    temperature: float = 0.1,
    sharpen_temperature: float = 0.25,
    me_max: bool = True,
) -> torch.Tensor:
    """PAWS (Assran et al., ICCV 2021, eqs. 1-4; ``init_paws_loss`` in facebookresearch/suncet):

        p_v      = snn(anchors[v], supports, Y)                 for every view v
        target_0 = sg(sharpen(p_1)),  target_1 = sg(sharpen(p_0)),
        target_v = (target_0 + target_1) / 2                    for local views v >= 2
        L = mean_{v, b} H(target_v[b], p_v[b])  +  [log C - H(mean_{v, b} sharpen(p_v[b]))]

    ``anchors``: [B, D] per view, the two global views first, then local ones. Target entries
    below 1e-4 are zeroed, as the reference does. The bracket is the mean-entropy maximisation
    (me-max) over the global batch and every anchor view, as the reference; the reference
    adds -H(mean) instead, the same up to the constant log C, which makes the term >= 0 and
    zero at a uniform class marginal. The supports, each rank's share of the support set
    with its labels [S, C], are gathered from every rank (gradients flow back to them), as
    the reference (every rank passes the same S and C); passing the same supports on every
    rank is also exact, because duplicating every support leaves p unchanged. Label
    smoothing of Y is the caller's. Targets come from the anchors themselves, detached; the
    reference takes them from the same network's output before its prediction head.
    """
    if len(anchors) < 2:
        raise ValueError(f"paws needs the two global views first, got {len(anchors)} view(s)")
    supports = distributed.gather_with_grad(supports)
    support_labels = distributed.gather(support_labels)
    predictions = torch.stack([snn(view, supports, support_labels, temperature) for view in anchors])  # [V, B, C]
    with torch.no_grad():
        global_targets = sharpen(predictions[:2].flip(0), sharpen_temperature)  # swapped: view 1 -> 0, 0 -> 1
        local_target = global_targets.mean(dim=0, keepdim=True).expand(len(anchors) - 2, -1, -1)
        targets = torch.cat([global_targets, local_target])
        targets[targets < 1e-4] = 0
    # xlogy: a zeroed target contributes 0 even where p underflows to 0 (0 log 0 = 0).
    loss = -torch.xlogy(targets, predictions).sum(dim=-1).mean()
    if me_max:
        sharpened = sharpen(predictions, sharpen_temperature).flatten(0, 1)
        marginal = distributed.gather_with_grad(sharpened).mean(dim=0)
        entropy = -torch.xlogy(marginal, marginal).sum()
        loss = loss + math.log(marginal.shape[0]) - entropy
    return loss
