"""Clustering and self-distillation losses: targets are assignments to prototypes (SwAV,
DeepCluster-v2) or a centred, sharpened teacher distribution (DINO); what keeps the energy
up is that the targets may not all be the same (equipartition, centring)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from selfsup import distributed


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """SwAV's codes by Sinkhorn-Knopp (Caron et al. 2020, sec. 3.1, eq. 3 and Algorithm 1;
    ``distributed_sinkhorn`` in the reference main_swav.py).

    The codes solve max_Q Tr(Q^T C^T Z) + epsilon H(Q) over the transportation polytope
    (each sample's code sums to 1, each prototype gets B / K of the mass), approximately:

        Q = exp(scores / epsilon)^T        K x B, normalised to total 1
        repeat ``iterations`` times:
            Q <- Q / (K * row sums)        each prototype gets 1/K
            Q <- Q / (B * column sums)     each sample gets 1/B
        codes = (B * Q)^T                  [B, K], each row sums to 1

    B is the *global* batch: under torch.distributed the total and the row sums are
    all-reduced, so each rank gets its rows of the codes of one process holding every rank's
    scores (all ranks must pass the same number of rows). After the last (column) step the
    rows of the codes sum to 1 exactly; the prototype marginal B / K holds only in the limit
    of many iterations.

    Runs without gradient, in float64 for float64 scores and float32 otherwise (half
    precision would lose the small entries); returns that dtype. Before exp, each
    prototype's maximum over the global batch is subtracted from its scores / epsilon: that
    multiplies row k of Q by a constant, which the first row normalisation removes exactly,
    so the codes are the paper's while exp can neither overflow nor empty a row.
    """
    if iterations < 1:
        raise ValueError(f"sinkhorn needs at least one iteration, got {iterations}")
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    logits = scores.to(dtype) / epsilon
    prototype_max = distributed.gather(logits.max(dim=0, keepdim=True).values).max(dim=0).values
    q = torch.exp(logits - prototype_max).T  # K x B_local
    num_prototypes = q.shape[0]
    global_batch = q.shape[1] * distributed.world_size()
    q /= distributed.all_reduce_sum(q.sum())
    for _ in range(iterations):
        q /= distributed.all_reduce_sum(q.sum(dim=1, keepdim=True)) * num_prototypes
        q /= q.sum(dim=0, keepdim=True) * global_batch
    return (q * global_batch).T


def cross_view_cross_entropy(targets: Sequence[torch.Tensor], logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """The swapped prediction shared by SwAV (eq. 1, multi-crop) and DINO (eq. 3):

        L = mean_{(i, v): v != i} mean_b ( -sum_k targets[i][b, k] log softmax(logits[v][b])_k )

    ``targets[i]`` [B, K] is a distribution computed from global view i; ``logits`` [B, K]
    has one entry per view, global views first in the same order, so a view never predicts
    its own target. Gradients flow into ``logits`` only if the caller detached ``targets``.
    SwAV's reference averages over v for each i and then over i; every i has len(logits) - 1
    partners, so that is this same mean.
    """
    if not 0 < len(targets) <= len(logits) or len(logits) < 2:
        raise ValueError(f"need 1 <= targets <= logits and >= 2 views, got {len(targets)} targets, {len(logits)} views")
    target = torch.stack(list(targets))  # [G, B, K]
    log_prob = torch.stack([F.log_softmax(view, dim=-1) for view in logits])  # [V, B, K]
    dtype = torch.promote_types(target.dtype, log_prob.dtype)
    cross = -torch.einsum("gbk,vbk->gv", target.to(dtype), log_prob.to(dtype)) / target.shape[1]
    other_view = ~torch.eye(len(targets), len(logits), dtype=torch.bool, device=cross.device)
    return cross[other_view].mean()


def swav(
    scores_a: torch.Tensor,
    scores_b: torch.Tensor,
    codes_a: torch.Tensor,
    codes_b: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """SwAV's swapped prediction for two crops (Caron et al. 2020, eqs. 1-2):

        L = 0.5 * [ l(codes_a, scores_b) + l(codes_b, scores_a) ],
        l(q, s) = -mean_b sum_k q[b, k] log softmax(s[b] / T)_k

    with ``scores`` = z . C (normalised embeddings against normalised prototypes) and the
    codes from :func:`sinkhorn`, which receive no gradient.
    """
    return swav_multicrop([scores_a, scores_b], [codes_a, codes_b], temperature)


def swav_multicrop(scores: Sequence[torch.Tensor], codes: Sequence[torch.Tensor], temperature: float = 0.1) -> torch.Tensor:
    """SwAV with multi-crop (Caron et al. 2020, sec. 3.2): the codes of each global view
    (``codes[i]`` for ``scores[i]``, i < len(codes)) are predicted from every other view's
    softmax(scores / T); the mean over those pairs (see :func:`cross_view_cross_entropy`)."""
    return cross_view_cross_entropy([code.detach() for code in codes], [view / temperature for view in scores])


def dino(
    student_out: Sequence[torch.Tensor],
    teacher_out: Sequence[torch.Tensor],
    center: torch.Tensor,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
) -> torch.Tensor:
    """DINO (Caron et al. 2021, eqs. 1-3 and Algorithm 1; ``DINOLoss`` in main_dino.py):

        P_t(x) = softmax((g_t(x) - c) / tau_t)   (centred, sharpened, no gradient)
        P_s(x) = softmax(g_s(x) / tau_s)
        L = mean over teacher global views i and student views v != i of H(P_t(x_i), P_s(x_v))

    ``student_out`` holds every view (global first), ``teacher_out`` the global views only.
    Update the centre with :func:`dino_center` after the step.
    """
    targets = [F.softmax((view.detach() - center.detach()) / teacher_temperature, dim=-1) for view in teacher_out]
    return cross_view_cross_entropy(targets, [view / student_temperature for view in student_out])


@torch.no_grad()
def dino_center(center: torch.Tensor, teacher_out: Sequence[torch.Tensor], momentum: float = 0.9) -> torch.Tensor:
    """DINO's centre update (Caron et al. 2021, eq. 4): c <- m c + (1 - m) mean g_t(x), the
    mean taken over every teacher view and the global batch (all-reduced, as the reference's
    ``update_center``). Returns the new centre."""
    outputs = torch.cat([view.detach() for view in teacher_out])
    batch_center = distributed.all_reduce_sum(outputs.sum(dim=0)) / (len(outputs) * distributed.world_size())
    return momentum * center + (1 - momentum) * batch_center


def deepcluster(scores: Sequence[torch.Tensor], assignments: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """DeepCluster-v2 (Caron et al. 2020, appendix; main_deepclusterv2.py):

        L = mean_v mean_b -log softmax(scores_v[b] / T)_{a_b}

    with a_b the image's k-means cluster from the previous epoch and ``scores`` against the
    centroids. Images with no assignment yet (a_b < 0) are left out; when none has one the
    loss is a zero that keeps the graph. With several clusterings (different k) the method
    averages this loss over them, as the reference.
    """
    assigned = assignments >= 0
    if not assigned.any():
        return scores[0].sum() * 0
    targets = assignments[assigned]
    return torch.stack([F.cross_entropy(view[assigned] / temperature, targets) for view in scores]).mean()
