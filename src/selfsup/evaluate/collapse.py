"""Collapse diagnostics for embeddings: did the representation degenerate?

Joint-embedding methods are trained to give two views of one image the same embedding.
The trivial solution, mapping everything to one point (complete collapse) or onto a few
directions (dimensional collapse), gives every pair the same low energy and is worthless.
These metrics detect it without labels:

* :func:`std_sqrt_d`: per-dimension standard deviation of the L2-normalised embeddings,
  averaged over dimensions and multiplied by ``sqrt(D)`` (Chen & He, "Exploring Simple
  Siamese Representation Learning" (SimSiam), CVPR 2021, Sec. 4.1 / Fig. 2). About 1 for
  embeddings spread isotropically on the sphere, 0 when they all coincide.
* :func:`effective_rank`: RankMe (Garrido, Balestriero, Najman & LeCun, "RankMe: Assessing
  the Downstream Performance of Pretrained Self-Supervised Representations by Their Rank",
  ICML 2023): the exponential of the entropy of the normalised singular values. About
  ``D`` for isotropic embeddings, 1 when they span one direction.
* :func:`alignment` and :func:`uniformity` (Wang & Isola, "Understanding Contrastive
  Representation Learning through Alignment and Uniformity on the Hypersphere", ICML 2020):
  how close positive pairs are, and how evenly all embeddings cover the sphere.
* :func:`prototype_usage`: for clustering methods (SwAV, DeepCluster, DINO), how the
  images spread over the prototypes. Their two collapses are every image on one prototype,
  and every image assigned uniformly to all of them (a SwAV loss stuck at ln K).

:func:`collapse_report` gathers them and raises the alarm against
:class:`CollapseThresholds`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.evaluate._common import check_features

__all__ = [
    "std_sqrt_d",
    "effective_rank",
    "alignment",
    "uniformity",
    "CollapseThresholds",
    "collapse_report",
    "prototype_usage",
]

# RankMe's epsilon, added to the normalised singular values before the entropy.
_RANKME_EPS = 1e-7
# Fixed seed of the row subsample in `uniformity`, so the metric is a function of `z` alone.
_UNIFORMITY_SUBSAMPLE_SEED = 0


def _embeddings(name: str, z: Tensor, min_rows: int = 1) -> Tensor:
    """Validate ``[N, D]`` embeddings and return them detached, on CPU, in float64."""
    check_features(name, z)
    if z.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {z.shape[0]}")
    if z.shape[1] == 0:
        raise ValueError(f"{name} has zero dimensions")
    z = z.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(z).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return z


def std_sqrt_d(z: Tensor) -> float:
    """Mean over dimensions of the std over samples of ``z / ||z||``, times ``sqrt(D)``.

    SimSiam's collapse monitor (Chen & He 2021, Sec. 4.1): for ``z`` drawn isotropically
    (e.g. a standard Gaussian) each coordinate of the normalised vector has standard
    deviation ``1/sqrt(D)``, so the result is about 1; when all embeddings collapse to one
    point it is 0. The standard deviation is the unbiased one (``N - 1``).

    Args:
        z: ``[N, D]`` embeddings, ``N >= 2``.
    """
    z = F.normalize(_embeddings("z", z, min_rows=2), dim=1)
    return float(z.std(dim=0).mean() * math.sqrt(z.shape[1]))


def effective_rank(z: Tensor) -> float:
    """RankMe effective rank: ``exp(-sum_k p_k log p_k)``, ``p_k = s_k / sum_j s_j + 1e-7``.

    Garrido et al. 2023, Eq. 1, over the singular values ``s_k`` of the embedding matrix.
    As in RankMe, ``z`` is **not centred** (nor normalised): a large mean shared by all
    embeddings counts as one dominant direction. Computed in float64. Ranges from about 1
    (all rows on one line) to ``min(N, D)`` (flat spectrum); use many more rows than
    dimensions for a faithful estimate. An all-zero matrix has effective rank 0.

    Args:
        z: ``[N, D]`` embeddings.
    """
    singular_values = torch.linalg.svdvals(_embeddings("z", z))
    total = singular_values.sum()
    if total == 0:
        return 0.0
    p = singular_values / total + _RANKME_EPS
    return float(torch.exp(-(p * p.log()).sum()))


def alignment(z_a: Tensor, z_b: Tensor) -> float:
    """Alignment loss ``E ||f(a) - f(b)||^2`` over positive pairs (Wang & Isola 2020, alpha=2).

    ``f`` is L2-normalisation; row ``i`` of ``z_a`` and row ``i`` of ``z_b`` form a positive
    pair. 0 for identical pairs, 4 for antipodal ones; lower is better aligned.

    Args:
        z_a: ``[N, D]`` embeddings of the first views.
        z_b: ``[N, D]`` embeddings of the second views.
    """
    a = F.normalize(_embeddings("z_a", z_a), dim=1)
    b = F.normalize(_embeddings("z_b", z_b), dim=1)
    if a.shape != b.shape:
        raise ValueError(f"z_a and z_b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return float((a - b).pow(2).sum(dim=1).mean())


def uniformity(z: Tensor, t: float = 2.0, max_samples: int = 4096) -> float:
    """Uniformity loss ``log E exp(-t ||f(x) - f(y)||^2)`` over distinct pairs (Wang & Isola 2020).

    ``f`` is L2-normalisation; the mean is over all ``N (N - 1) / 2`` unordered pairs of
    distinct rows (``torch.pdist``), evaluated stably with ``logsumexp``. Lower (more
    negative) is more uniform; 0 when all embeddings coincide; the minimum, two antipodal
    points, is ``-4 t``. With more than ``max_samples`` rows, a subset of ``max_samples``
    rows drawn by a generator with a fixed seed is used, so the value is deterministic and
    the cost bounded (4096 rows: 8.4M pairs).

    Args:
        z: ``[N, D]`` embeddings, ``N >= 2``.
        t: temperature (Wang & Isola use 2).
        max_samples: maximum number of rows used.
    """
    if max_samples < 2:
        raise ValueError(f"max_samples must be >= 2, got {max_samples}")
    check_features("z", z)
    if z.shape[0] > max_samples:
        generator = torch.Generator().manual_seed(_UNIFORMITY_SUBSAMPLE_SEED)
        z = z[torch.randperm(z.shape[0], generator=generator)[:max_samples].to(z.device)]
    z = _embeddings("z", z, min_rows=2)
    squared_distances = torch.pdist(F.normalize(z, dim=1)).pow(2)
    return float(torch.logsumexp(-t * squared_distances, dim=0) - math.log(squared_distances.numel()))


@dataclass(frozen=True)
class CollapseThresholds:
    """Values below which :func:`collapse_report` declares the embeddings collapsed.

    * ``std_sqrt_d = 0.2``: healthy embeddings sit near 1 and completely collapsed ones at
      0 (SimSiam, Fig. 2: the run without stop-gradient drops to 0 within a few epochs while
      the working one stays near ``1/sqrt(d)`` per dimension, i.e. ~1 after the ``sqrt(D)``
      scaling). 0.2 means the normalised embeddings vary five times less than isotropic
      ones do: they cluster around one shared direction.
    * ``effective_rank = 2.0``: an effective rank of about 1 means every embedding lies on
      one line, the dimensional-collapse end point (RankMe: rank and downstream accuracy
      fall together). Below 2 fewer than two directions carry the signal, which no useful
      multi-class representation does; healthy embeddings have a rank in the tens or
      hundreds. This catches collapse that ``std_sqrt_d`` misses, e.g. embeddings spread
      along one direction through the origin (``std_sqrt_d`` stays high for ``x`` and
      ``-x``).
    """

    std_sqrt_d: float = 0.2
    effective_rank: float = 2.0


def collapse_report(
    z: Tensor,
    z_a: Tensor | None = None,
    z_b: Tensor | None = None,
    thresholds: CollapseThresholds = CollapseThresholds(),
) -> dict:
    """All collapse diagnostics of ``z`` and the verdict against ``thresholds``.

    Args:
        z: ``[N, D]`` embeddings (many rows: RankMe needs ``N`` well above ``D`` to see the
            full rank).
        z_a: optional ``[M, D]`` embeddings of first views, for :func:`alignment`.
        z_b: optional ``[M, D]`` embeddings of the matching second views.
        thresholds: alarm thresholds.

    Returns:
        ``{"std_sqrt_d": float, "effective_rank": float, "alignment": float or None,
        "uniformity": float, "collapsed": bool, "reasons": [str, ...]}``; ``collapsed``
        is true when ``std_sqrt_d`` or ``effective_rank`` is below its threshold, and
        ``reasons`` says which, with the values (empty when not collapsed).
    """
    if (z_a is None) != (z_b is None):
        raise ValueError("give both z_a and z_b (positive pairs) or neither")
    report = {
        "std_sqrt_d": std_sqrt_d(z),
        "effective_rank": effective_rank(z),
        "alignment": None if z_a is None else alignment(z_a, z_b),
        "uniformity": uniformity(z),
    }
    reasons = []
    if report["std_sqrt_d"] < thresholds.std_sqrt_d:
        reasons.append(
            f"std_sqrt_d = {report['std_sqrt_d']:.4g} is below {thresholds.std_sqrt_d:g}: the normalised "
            "embeddings barely vary (about 1 when spread over the sphere, 0 when all equal)"
        )
    if report["effective_rank"] < thresholds.effective_rank:
        reasons.append(
            f"effective_rank = {report['effective_rank']:.4g} is below {thresholds.effective_rank:g}: the "
            f"embeddings span fewer than {thresholds.effective_rank:g} effective directions "
            f"(of {z.shape[1]} dimensions)"
        )
    report["collapsed"] = bool(reasons)
    report["reasons"] = reasons
    return report


# A prototype holding this share of the images, or assignments this close to uniform
# (entropy as a fraction of ln K), is collapse: healthy clusterings of data with more than a
# handful of classes are far from both.
_LARGEST_SHARE_ALARM = 0.9
_ASSIGNMENT_ENTROPY_ALARM = 0.998


def prototype_usage(assignments: Tensor) -> dict:
    """How ``assignments`` ``[N, K]`` (each row a distribution over K prototypes: Sinkhorn
    codes, teacher probabilities, or one-hot cluster labels) use the prototypes.

    Returns ``{"used": prototypes that are some image's most likely one, "largest_share":
    the share of images on the most popular prototype, "entropy": entropy of that
    histogram / ln min(N, K) (1 = spread evenly), "assignment_entropy": mean entropy of one
    image's assignment / ln K (1 = uniform, no prototype preferred), "collapsed",
    "reasons"}``. Collapse: ``largest_share >= 0.9`` (one prototype takes the images) or
    ``assignment_entropy >= 0.998`` (assignments carry no information; DINO early in
    training sits near 0.96 and is not collapsed).
    """
    check_features("assignments", assignments)
    p = assignments.detach().to(device="cpu", dtype=torch.float64)
    count, prototypes = p.shape
    if count == 0 or prototypes < 2:
        raise ValueError(f"assignments need at least one row and two prototypes, got shape {tuple(p.shape)}")
    histogram = torch.bincount(p.argmax(dim=1), minlength=prototypes).double() / count
    nonzero = histogram[histogram > 0]
    per_image = -(p * p.clamp_min(1e-30).log()).sum(dim=1).mean()
    report = {
        "used": int((histogram > 0).sum()),
        "largest_share": float(histogram.max()),
        "entropy": float(-(nonzero * nonzero.log()).sum() / math.log(max(2, min(count, prototypes)))),
        "assignment_entropy": float(per_image / math.log(prototypes)),
    }
    reasons = []
    if report["largest_share"] >= _LARGEST_SHARE_ALARM:
        reasons.append(f"one prototype takes {100 * report['largest_share']:.0f}% of the images (of {prototypes} prototypes)")
    if report["assignment_entropy"] >= _ASSIGNMENT_ENTROPY_ALARM:
        reasons.append(
            f"assignments are uniform over the {prototypes} prototypes (entropy {report['assignment_entropy']:.3f} x ln K)"
        )
    report["collapsed"] = bool(reasons)
    report["reasons"] = reasons
    return report
