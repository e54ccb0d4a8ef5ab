"""SIGReg: Sketched Isotropic Gaussian Regularisation (LeJEPA), the Epps-Pulley statistic of
random 1-D projections of the embeddings against N(0, 1).

Balestriero & LeCun, "LeJEPA: Provable and Scalable Self-Supervised Learning Without the
Heuristics", arXiv 2511.08544 (2025): Definition 2 (eq. "SIGReg"), eq. "Epps-Pulley" (section
4.2.3), Algorithm 1. Reference code github.com/rbalestr-lab/lejepa: ``lejepa/univariate/
epps_pulley.py`` lines 62-99 (``EppsPulley``: knots on [0, t_max], doubled trapezoid weights
times exp(-t^2/2), ``err @ weights * N``), ``lejepa/multivariate/slicing.py`` lines 119-153
(``SlicingUnivariateTest.forward``: unit Gaussian directions, mean over slices) and
``MINIMAL.md`` lines 57-75 (``SIGReg``).
"""

from __future__ import annotations

import torch

from selfsup import distributed

# The paper's recommended starting points (section 6.1, "Stability across Epps-Pulley
# hyperparameters"): 17 integration points on [-5, 5] and 1024 slices.
T_MAX = 5.0
NUM_POINTS = 17
NUM_SLICES = 1024


def quadrature(t_max: float = T_MAX, num_points: int = NUM_POINTS, *, dtype: torch.dtype = torch.float64,
               device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes t >= 0 and weights c such that sum_k c_k g(t_k) is the trapezoidal rule of
    ∫ g(t) w(t) dt on ``num_points`` equally spaced knots of [-t_max, t_max] (Algorithm 1's
    ``torch.linspace(-5, 5, 17)`` and ``torch.trapz``), for g even in t, w(t) = exp(-t^2 / 2).

    The Epps-Pulley integrand is even (the ECF at -t is the conjugate of the ECF at t, the
    N(0, 1) CF is real), so each knot t > 0 carries its mirror's weight too ("we leverage the
    symmetry of the integrand", section 5.1; the reference code's doubled weights): the same
    value as on the full grid with about half the cosines and sines.
    """
    if num_points < 2:
        raise ValueError(f"the Epps-Pulley quadrature needs at least 2 points, got {num_points}")
    if t_max <= 0:
        raise ValueError(f"the Epps-Pulley integration bound must be positive, got {t_max}")
    t = torch.linspace(-t_max, t_max, num_points, dtype=torch.float64)
    step = 2 * t_max / (num_points - 1)
    trapezoid = torch.full((num_points,), step, dtype=torch.float64)
    trapezoid[[0, -1]] = step / 2
    keep = t >= -1e-12 * t_max  # the knot at 0 (odd num_points) is its own mirror
    t, trapezoid = t[keep].clamp_min(0.0), trapezoid[keep]
    folded = torch.where(t > 0, 2 * trapezoid, trapezoid)
    weights = folded * torch.exp(-t.square() / 2)
    return t.to(dtype=dtype, device=device), weights.to(dtype=dtype, device=device)


def epps_pulley(x: torch.Tensor, t_max: float = T_MAX, num_points: int = NUM_POINTS, gather: bool = True) -> torch.Tensor:
    """The Epps-Pulley statistic (Epps & Pulley 1983; LeJEPA eq. "Epps-Pulley") of 1-D samples
    against N(0, 1):

        EP = N ∫ |φ̂(t) - φ(t)|^2 w(t) dt,   φ̂(t) = (1/N) Σ_n exp(i t x_n),   φ(t) = exp(-t^2 / 2),

    with the weight w(t) = exp(-t^2 / 2) and the integral by the trapezoidal rule on
    ``num_points`` knots of [-t_max, t_max], as Algorithm 1 of the paper (its ``exp_f`` is both
    φ and the window; the text's w(t) = exp(-t^2 / σ^2) with σ = 1 is not what the paper's code
    or the reference code use). |φ̂ - φ|^2 = (mean cos(t x) - φ(t))^2 + (mean sin(t x))^2.

    Args:
        x: [N] one sample, or [N, M] M samples (one per column, e.g. one per direction).
        gather: under torch.distributed, concatenate every rank's rows first (gradients flow
            back through :func:`selfsup.distributed.gather_with_grad`), so N and φ̂ are those
            of the global batch: the value equals one process's on the whole batch.

    Returns:
        The statistic: a scalar for [N], [M] for [N, M].
    """
    if x.dim() not in (1, 2):
        raise ValueError(f"epps_pulley expects samples [N] or [N, M], got shape {tuple(x.shape)}")
    if gather:
        x = distributed.gather_with_grad(x)
    t, weights = quadrature(t_max, num_points, dtype=x.dtype, device=x.device)
    xt = x.unsqueeze(-1) * t  # [N, (M,) T]
    error = (xt.cos().mean(dim=0) - torch.exp(-t.square() / 2)).square() + xt.sin().mean(dim=0).square()
    return len(x) * (error @ weights)


def random_directions(dim: int, num_slices: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[dim, num_slices] directions uniform on the unit sphere (Gaussian columns normalised,
    Algorithm 1), drawn from ``generator`` on its device. Under torch.distributed every rank
    takes rank 0's draw (the paper seeds every rank's generator with the global step for the
    same purpose), so the statistic of the gathered batch is the same on every rank and equals
    the one-process value."""
    directions = torch.randn(dim, num_slices, generator=generator, device=generator.device, dtype=torch.float32)
    directions = distributed.gather(directions)[:dim]  # rank 0's rows come first; identity on one process
    return (directions / directions.norm(dim=0)).to(dtype)


def sigreg(z: torch.Tensor, directions: torch.Tensor | None = None, *, generator: torch.Generator | None = None,
           num_slices: int = NUM_SLICES, t_max: float = T_MAX, num_points: int = NUM_POINTS) -> torch.Tensor:
    """SIGReg with the Epps-Pulley test (LeJEPA Definition 2, eq. "SIGReg"; Algorithm 1):

        SIGReg(A, {z_n}) = (1 / |A|) Σ_{a ∈ A} EP({a^T z_n}_{n=1..N})

    over unit directions A (the average replaces Theorem 2's maximum, for dense gradients).
    A set of views [V, N, D] gives the mean of the V views' SIGReg with the same directions,
    the (λ / V) Σ_v SIGReg({z_{n,v}}_n) term of eq. (LeJEPA) up to λ (Algorithm 2: ``mean(SIGReg(emb)
    for emb in a_emb)``). Computed in float32 (float64 stays), outside autocast: the cosines of
    t x for |t x| up to tens are meaningless in bfloat16.

    Under torch.distributed the embeddings of every rank are gathered (with gradients) before
    projecting, so N is the global batch and the value equals one process's on it.

    Args:
        z: [N, D] embeddings, or [V, N, D] the embeddings of V views of the same N samples.
        directions: [D, M] unit columns; if None, ``num_slices`` are drawn from ``generator``
            (:func:`random_directions`, resampled every step as the paper does).
        t_max, num_points: the Epps-Pulley quadrature (:func:`epps_pulley`).
    """
    if z.dim() not in (2, 3):
        raise ValueError(f"sigreg expects embeddings [N, D] or [V, N, D], got shape {tuple(z.shape)}")
    dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    if directions is None:
        if generator is None:
            raise ValueError("sigreg needs directions or a generator to draw them from")
        directions = random_directions(z.shape[-1], num_slices, generator)
    if directions.dim() != 2 or directions.shape[0] != z.shape[-1]:
        raise ValueError(f"directions must be [{z.shape[-1]}, M], got shape {tuple(directions.shape)}")
    with torch.autocast(z.device.type, enabled=False):
        views = z.to(dtype).unsqueeze(0) if z.dim() == 2 else z.to(dtype)
        samples = distributed.gather_with_grad(views.transpose(0, 1))  # [N, V, D], the global batch
        projections = samples @ directions.to(device=z.device, dtype=dtype)  # [N, V, M]
        statistics = epps_pulley(projections.flatten(1), t_max, num_points, gather=False)  # [V * M]
    return statistics.mean()
