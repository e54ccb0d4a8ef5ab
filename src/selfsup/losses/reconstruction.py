"""Reconstruction losses on image patches: the masked autoencoder's pixel regression.

He, Chen, Xie, Li, Dollár, Girshick, "Masked Autoencoders Are Scalable Vision Learners",
CVPR 2022 (MAE), section 3 "Reconstruction target"; reference code facebookresearch/mae,
``models_mae.py`` (``patchify``, ``unpatchify``, ``forward_loss``).

An image [B, C, H, W] is cut into a grid of h x w non-overlapping p x p patches, each
flattened to p*p*C values in (row, column, channel) order, the patches in row-major order:
the layout of the reference's ``patchify`` and of the ViT's patch tokens
(:meth:`selfsup.backbones.vit.VisionTransformer.embed_patches`).
"""

from __future__ import annotations

import math

import torch

NORM_PIX_EPS = 1e-6  # models_mae.py forward_loss: (var + 1.e-6) ** .5


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, h*w, p*p*C] with h = H / p, w = W / p (``models_mae.py`` ``patchify``,
    ``'nchpwq->nhwpqc'``); H and W must be multiples of ``patch`` (rectangular images are fine)."""
    batch, channels, height, width = images.shape
    if patch < 1 or height % patch or width % patch:
        raise ValueError(f"patchify: {height}x{width} images do not split into {patch} px patches")
    h, w = height // patch, width // patch
    x = images.reshape(batch, channels, h, patch, w, patch)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(batch, h * w, patch * patch * channels)


def unpatchify(patches: torch.Tensor, patch: int, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """The inverse of :func:`patchify`: [B, h*w, p*p*C] -> [B, C, h*p, w*p]. ``grid`` (h, w)
    defaults to a square one; the channels are read off the patch length."""
    batch, count, length = patches.shape
    if grid is None:
        side = math.isqrt(count)
        grid = (side, side)
    h, w = grid
    if h * w != count or length % (patch * patch):
        raise ValueError(f"unpatchify: {count} patches of {length} values are not a {h}x{w} grid of {patch} px patches")
    channels = length // (patch * patch)
    x = patches.reshape(batch, h, w, patch, patch, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(batch, channels, h * patch, w * patch)


def patch_statistics(patches: torch.Tensor, eps: float = NORM_PIX_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, sqrt(var + eps)) of each patch over its pixels, [..., 1] each. The variance is
    the unbiased one (n - 1), as ``torch.var`` in the reference's ``forward_loss``."""
    mean = patches.mean(dim=-1, keepdim=True)
    return mean, (patches.var(dim=-1, keepdim=True) + eps).sqrt()


def normalize_patches(patches: torch.Tensor, eps: float = NORM_PIX_EPS) -> torch.Tensor:
    """MAE's normalised-pixel target (section 3, "Reconstruction target"; ``norm_pix_loss``):
    each patch minus the mean of its pixels, divided by sqrt(their variance + eps)."""
    mean, scale = patch_statistics(patches, eps)
    return (patches - mean) / scale


def patch_errors(prediction: torch.Tensor, target_patches: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
    """The mean squared error of every patch, [B, N]: for prediction x_hat and target x
    (normalised by :func:`normalize_patches` when ``norm_pix``), both [B, N, P],

        e_{b,n} = 1/P sum_k (x_hat_{b,n,k} - x_{b,n,k})^2
    """
    target = normalize_patches(target_patches) if norm_pix else target_patches
    return (prediction - target).pow(2).mean(dim=-1)


def masked_patch_mse(prediction: torch.Tensor, target_patches: torch.Tensor, mask: torch.Tensor,
                     norm_pix: bool = True) -> torch.Tensor:
    """MAE's loss (section 3, "Reconstruction target"; ``models_mae.py`` ``forward_loss``): the
    mean squared error in pixel space on the masked patches only,

        L = sum_{b,n} m_{b,n} e_{b,n} / sum_{b,n} m_{b,n}

    with e the per-patch error of :func:`patch_errors` and m the ``mask`` [B, N] (1 or True =
    masked, i.e. hidden from the encoder; 0 = visible). ``prediction`` and
    ``target_patches`` are [B, N, P]. Visible patches do not count, as in the paper ("we
    compute the loss only on masked patches, similar to BERT"). The mean is over this
    process's masked patches; every process masks the same number per image, so the mean of
    the processes' losses that data-parallel training takes is the mean over the global batch.
    """
    weights = mask.to(prediction.dtype)
    return (patch_errors(prediction, target_patches, norm_pix) * weights).sum() / weights.sum()

