"""The energy view of self-supervised learning, and the metric shared by every method.

Every method in selfsup learns an energy function ``F(x, y)`` that is low when ``y`` is
compatible with ``x`` (two views of one image, a sentence and its hidden word, a clip and
its continuation) and high otherwise (LeCun et al., "A Tutorial on Energy-Based Learning",
2006; LeCun, "A Path Towards Autonomous Machine Intelligence", 2022). Methods differ only in
how they keep the energy of incompatible pairs high.

:class:`Energy` is the protocol a trained model satisfies; :func:`energy_auc` measures how
well its energies separate compatible from incompatible pairs, the same way for every
method, so runs compare.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["Energy", "energy_auc"]


@runtime_checkable
class Energy(Protocol):
    """Anything that scores the compatibility of pairs ``(x[i], y[i])``.

    ``energy(x, y)`` returns a tensor of shape ``[B]``: one scalar per pair, **low when the
    pair is compatible** and high otherwise. Every :mod:`selfsup.methods` model implements
    it; a plain function wrapped in a small class works too.
    """

    def energy(self, x: Tensor, y: Tensor) -> Tensor:
        """Energies of the ``B`` pairs ``(x[i], y[i])``, shape ``[B]``, low = compatible."""
        ...


def _check_energies(name: str, values: Tensor) -> Tensor:
    if not isinstance(values, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(values).__name__}")
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one energy per pair), got shape {tuple(values.shape)}")
    if values.numel() == 0:
        raise ValueError(f"{name} is empty: at least one energy is needed")
    if values.is_complex():
        raise TypeError(f"{name} must be real-valued, got {values.dtype}")
    values = values.detach().to(device="cpu", dtype=torch.float64)
    if torch.isnan(values).any():
        raise ValueError(f"{name} contains NaN energies; the AUC is undefined")
    return values


def energy_auc(compatible: Tensor, incompatible: Tensor) -> float:
    """Probability that a compatible pair has lower energy than an incompatible one.

    This is the area under the ROC curve of the energy as a detector of incompatible
    pairs, i.e. the Mann–Whitney U statistic divided by ``n * m`` (Mann & Whitney, 1947;
    Hanley & McNeil, 1982)::

        AUC = 1/(n m) * sum_i sum_j [ 1{c_i < u_j} + 1/2 * 1{c_i == u_j} ]

    over the ``n`` compatible energies ``c`` and ``m`` incompatible energies ``u``. It is
    1.0 when every compatible pair is below every incompatible pair, 0.5 for energies that
    carry no information (for example a collapsed model that gives every pair the same
    energy) and 0.0 when the order is reversed.

    It is computed from mid-ranks of the pooled energies in ``O((n+m) log(n+m))`` time and
    ``O(n+m)`` memory, never an ``n x m`` matrix: with ``R_u`` the rank sum of the
    incompatible energies (ties share the mean of their ranks),
    ``U = R_u - m (m + 1) / 2`` counts the pairs with ``u_j > c_i`` plus half the ties.

    Args:
        compatible: 1-D energies of compatible pairs (e.g. two views of one image).
        incompatible: 1-D energies of incompatible pairs (e.g. views of different images).
            ``±inf`` is allowed; NaN is not.

    Returns:
        The AUC as a Python float in ``[0, 1]``.

    Raises:
        ValueError: if either input is not 1-D, is empty or contains NaN.
    """
    compatible = _check_energies("compatible", compatible)
    incompatible = _check_energies("incompatible", incompatible)
    n, m = compatible.numel(), incompatible.numel()

    pooled = torch.cat([compatible, incompatible])
    # `unique` sorts; equal energies form one group whose members share the mid-rank.
    _, group_of, group_size = torch.unique(pooled, sorted=True, return_inverse=True, return_counts=True)
    group_size = group_size.to(torch.float64)
    ranks_before_group = torch.cumsum(group_size, 0) - group_size
    mid_rank = ranks_before_group + (group_size + 1.0) / 2.0  # 1-based ranks

    incompatible_rank_sum = mid_rank[group_of[n:]].sum()
    u_statistic = incompatible_rank_sum - m * (m + 1) / 2.0
    return float(u_statistic / (float(n) * float(m)))
