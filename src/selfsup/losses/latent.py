"""Latent-variable energy models: prediction cost, regularisers of the latent, free energy;
and the embedding-space distance of joint-embedding predictive architectures (JEPA).

A latent-variable energy model (LeCun, Chopra, Hadsell, Ranzato and Huang, "A Tutorial on
Energy-Based Learning", 2006; the NYU Deep Learning course, 2020-21) scores a pair (x, y)
through a latent z that carries what x does not determine about y (where a sprite turns):

    E(x, y, z) = C(y, Dec(Pred(Enc(x)), z)) + lambda R(z)
    F(x, y)    = min_z E(x, y, z)                              (zero temperature)
               = -1/beta log integral exp(-beta E(x, y, z)) dz  (temperature 1/beta)

R limits the information z can carry; without it, z alone could reconstruct any y and
every pair would get zero energy (collapse). Each function here returns one value per
sample, ``[B]``, so a method can weight, sum and average the terms as its recipe says.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def prediction_cost(y: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Squared-error cost per sample, summed over its elements:

        C(y, y_hat) = ||y - y_hat||^2

    the negative log-likelihood of y under N(y_hat, I/2), up to a constant. ``y`` and
    ``prediction`` ``[B, ...]``; returns ``[B]``. Summed, not averaged: a latent's
    regulariser lambda R(z) then weighs against the whole error z removes (nats against
    nats for the KL), and the gradient with respect to z keeps a usable scale, so the
    inference steps and the ISTA threshold need no rescaling with the frame size.
    """
    return (y - prediction).pow(2).flatten(1).sum(dim=1)


def l1_sparsity(z: torch.Tensor) -> torch.Tensor:
    """R(z) = ||z||_1 = sum_i |z_i| per sample (sparse coding; Olshausen & Field 1996).

    ``z`` ``[B, ...]``; returns ``[B]``. Minimised over z with :func:`shrink` steps (ISTA).
    """
    return z.abs().flatten(1).sum(dim=1)


def norm_bound(z: torch.Tensor, radius: float) -> torch.Tensor:
    """R(z) = max(0, ||z||_2 - radius)^2 per sample: zero inside the ball of ``radius``,
    a quadratic penalty outside it (a soft version of constraining z to the ball).

    ``z`` ``[B, ...]``; returns ``[B]``.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    return F.relu(z.flatten(1).norm(dim=1) - radius).pow(2)


def gaussian_kl(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag exp(log_variance)) || N(0, I)) per sample (the VAE's regulariser,
    Kingma & Welling, ICLR 2014, appendix B):

        KL = 1/2 sum_i (exp(lv_i) + mean_i^2 - 1 - lv_i)

    in nats; the information the noisy latent can carry about y is at most this. ``mean``
    and ``log_variance`` ``[B, ...]``; returns ``[B]``.
    """
    return 0.5 * (log_variance.exp() + mean.pow(2) - 1 - log_variance).flatten(1).sum(dim=1)


def shrink(z: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """Soft thresholding, the proximal operator of ``threshold * ||z||_1``:

        shrink(z, t)_i = sign(z_i) max(0, |z_i| - t)

    One ISTA step (Daubechies, Defrise and De Mol, 2004) for min_z C(z) + lambda ||z||_1
    is ``z <- shrink(z - eta grad C(z), eta lambda)``. ``threshold`` >= 0, a number or a
    tensor broadcast against ``z``; returns a tensor shaped as ``z``.
    """
    if not isinstance(threshold, torch.Tensor) and threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    return z.sign() * (z.abs() - threshold).clamp_min(0)


def free_energy(energies: torch.Tensor, beta: float | None = None) -> torch.Tensor:
    """Free energy F(x, y) from the energies ``[B, K]`` of K latent values z_1..z_K:

        beta None (zero temperature):  F = min_k E_k
        beta > 0:                      F = -1/beta log (1/K sum_k exp(-beta E_k))

    The soft version treats the K values as samples of z from its prior, so the sum is a
    Monte Carlo estimate of the integral over z: the 1/K (a ``+ log(K) / beta`` beside the
    plain log-sum-exp) keeps F between min_k E_k and mean_k E_k, makes K equal energies
    give that energy, and lets F be compared across different K. F tends to the minimum
    as beta -> inf (``beta=math.inf`` gives it exactly) and to the mean as beta -> 0.
    Returns ``[B]``.
    """
    if beta is None or beta == math.inf:
        return energies.min(dim=1).values
    if not beta > 0:
        raise ValueError(f"beta must be > 0 (or None for the minimum), got {beta}")
    count = energies.shape[1]
    return -(torch.logsumexp(-beta * energies, dim=1) - math.log(count)) / beta


def embedding_distance(prediction: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """Distance per sample between predicted and target embeddings ``[B, T, D]``, averaged
    over the n = T x D elements of a sample; returns ``[B]``:

        l1: ||s_hat - s||_1 / n     (V-JEPA, Bardes et al. 2024)
        l2: ||s_hat - s||_2^2 / n   (I-JEPA, Assran et al. 2023)
    """
    difference = (prediction - target).flatten(1)
    return (difference.pow(2) if loss == "l2" else difference.abs()).mean(dim=1)
