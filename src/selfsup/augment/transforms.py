"""Batched image augmentations that run on the training device.

Every function takes a float batch ``images[B, C, H, W]`` with values in [0, 1] (``C`` is 1
or 3) and draws *all* of its randomness from an explicit ``torch.Generator`` that lives on the
images' device, so that a batch's augmentations are a pure function of (images, generator
state) and can be reproduced from a seed (see :func:`selfsup.augment.views.seeded_generator`).
The global RNG is never touched.

Each random op decides per sample: parameters (crop box, jitter factors, blur sigma) are drawn
for the whole batch in one call and applied with tensor ops, never with a Python loop over
samples. Probabilities are applied with per-sample masks over work done for the whole batch,
never by indexing out the selected samples, so no op synchronises the host with a CUDA device
and no shape depends on a random draw. Semantics follow torchvision's transforms of the same
names (``RandomResizedCrop``, ``RandomHorizontalFlip``, ``ColorJitter``, ``RandomGrayscale``,
``GaussianBlur``, ``RandomSolarize``), with the differences listed in each docstring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LUMA_WEIGHTS",
    "color_jitter",
    "crop_boxes",
    "gaussian_blur",
    "horizontal_flip",
    "normalize",
    "random_grayscale",
    "random_resized_crop",
    "resized_crop",
    "rgb_to_grayscale",
    "solarize",
]

#: ITU-R BT.601 luma weights for (R, G, B), as used by PIL's ``convert("L")``.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# Number of boxes drawn per sample before falling back, as in torchvision's RandomResizedCrop.
_CROP_TRIES = 10


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _check_images(images: Tensor, generator: torch.Generator | None = None) -> None:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"expected images of shape [B, C, H, W] with C in (1, 3), got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise TypeError(f"expected a float image batch in [0, 1], got dtype {images.dtype}")
    if generator is not None and generator.device.type != images.device.type:
        raise ValueError(
            f"the generator is on {generator.device} but the images are on {images.device}; "
            "create it on the images' device (e.g. seeded_generator(seed, step, images.device))"
        )


def _check_probability(p: float, name: str = "p") -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p}")


def _uniform(
    shape: tuple[int, ...], low: float, high: float, like: Tensor, generator: torch.Generator
) -> Tensor:
    """Uniform samples in [low, high) with the dtype and device of ``like``."""
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return low + (high - low) * u


def _bernoulli(batch: int, p: float, like: Tensor, generator: torch.Generator) -> Tensor:
    """Boolean mask [B]: True with probability ``p`` for each sample."""
    return torch.rand(batch, generator=generator, device=like.device) < p


def _per_sample(mask: Tensor) -> Tensor:
    """Reshape a per-sample vector [B] so that it broadcasts over [B, C, H, W]."""
    return mask.view(-1, 1, 1, 1)


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """Luma ``0.299 R + 0.587 G + 0.114 B`` of an RGB batch, shape [B, 1, H, W] (ITU-R BT.601)."""
    red, green, blue = images.unbind(dim=1)
    luma = red * LUMA_WEIGHTS[0]
    luma.add_(green, alpha=LUMA_WEIGHTS[1]).add_(blue, alpha=LUMA_WEIGHTS[2])
    return luma.unsqueeze(1)


def _blend_(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """In place: ``factor * images + (1 - factor) * other``, clamped to [0, 1] (torchvision's
    ``_blend``), with one factor per sample; ``other`` broadcasts against ``images``."""
    return images.sub_(other).mul_(_per_sample(factor)).add_(other).clamp_(0.0, 1.0)


# ----------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------
def crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> Tensor:
    """Sample one crop box per sample the way torchvision's ``RandomResizedCrop`` does.

    The area fraction is uniform in ``scale`` and the aspect ratio (width / height) is
    log-uniform in ``ratio``; a box that does not fit in the image is redrawn, up to 10 times,
    and if none of the 10 fits the box falls back to the largest centred box whose aspect ratio
    is the image's clamped into ``ratio``. The 10 tries are drawn for all samples at once and the first that fits
    is taken, so the distribution is torchvision's without a loop over samples. Unlike
    torchvision, sizes and offsets are real numbers (sub-pixel boxes), not rounded to integers;
    the offset is uniform over the positions where the box fits (centred for the fallback).

    Returns:
        ``float32`` tensor [B, 4] of ``(top, left, box_height, box_width)`` in pixels.
    """
    if not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(f"scale must satisfy 0 < scale[0] <= scale[1] <= 1, got {scale}")
    if not 0.0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < ratio[0] <= ratio[1], got {ratio}")
    like = torch.empty(0, device=device if device is not None else generator.device)
    tries = (batch, _CROP_TRIES)
    area = height * width * _uniform(tries, scale[0], scale[1], like, generator)
    log_ratio = _uniform(tries, math.log(ratio[0]), math.log(ratio[1]), like, generator)
    aspect = torch.exp(log_ratio)
    box_w = torch.sqrt(area * aspect)
    box_h = torch.sqrt(area / aspect)
    fits = (box_w <= width) & (box_h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first box that fits
    box_w = box_w.gather(1, first).squeeze(1)
    box_h = box_h.gather(1, first).squeeze(1)

    # Fallback (torchvision): whole image, aspect ratio clamped into ``ratio``, centred.
    image_ratio = width / height
    if image_ratio < ratio[0]:
        fallback_w, fallback_h = float(width), width / ratio[0]
    elif image_ratio > ratio[1]:
        fallback_w, fallback_h = height * ratio[1], float(height)
    else:
        fallback_w, fallback_h = float(width), float(height)
    any_fits = fits.any(dim=1)
    box_w = torch.where(any_fits, box_w, torch.full_like(box_w, fallback_w))
    box_h = torch.where(any_fits, box_h, torch.full_like(box_h, fallback_h))

    # Uniform position where the box fits; the fallback box is centred, as in torchvision.
    offsets = torch.rand((batch, 2), generator=generator, device=like.device)
    offsets = torch.where(any_fits[:, None], offsets, 0.5)
    top = offsets[:, 0] * (height - box_h)
    left = offsets[:, 1] * (width - box_w)
    return torch.stack((top, left, box_h, box_w), dim=1)


def resized_crop(images: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """Crop ``boxes`` out of ``images`` and resample each to ``size x size`` in one pass.

    One ``grid_sample`` call (bilinear, ``align_corners=False``) for the whole batch on the
    sampling grid of the affine map ``theta = [[w/W, 0, (2 left + w)/W - 1], [0, h/H, (2 top +
    h)/H - 1]]`` (the grid ``affine_grid(theta)`` would give, built directly because the map
    has no shear, which is several times faster on CPU). Output pixel centres land where
    ``F.interpolate`` of the sliced box puts them (``align_corners=False``), but neighbours
    outside the box are read from the image instead of being clamped to the box edge, and the
    image border is replicated. There is no antialiasing, so boxes much larger than ``size``
    alias (not an issue for the 12-96 px crops of small images).

    Args:
        images: [B, C, H, W] float.
        boxes: [B, 4] ``(top, left, box_height, box_width)`` in pixels, as from :func:`crop_boxes`.
        size: output height and width.
        flip: optional boolean [B]; where True the crop is mirrored horizontally (a negative
            horizontal scale in the same map, so it costs nothing).
    """
    batch, _, height, width = images.shape
    boxes = boxes.to(device=images.device, dtype=images.dtype)
    top, left, box_h, box_w = boxes.unbind(dim=1)
    scale_x, scale_y = box_w / width, box_h / height
    if flip is not None:
        scale_x = torch.where(flip.to(images.device), -scale_x, scale_x)
    centre_x = (2 * left + box_w) / width - 1
    centre_y = (2 * top + box_h) / height - 1
    # Normalised output pixel centres, (2 i + 1) / size - 1, as affine_grid uses them.
    base = (2 * torch.arange(size, device=images.device, dtype=images.dtype) + 1) / size - 1
    grid_x = scale_x[:, None] * base + centre_x[:, None]  # [B, size]
    grid_y = scale_y[:, None] * base + centre_y[:, None]
    grid = torch.stack(
        (grid_x[:, None, :].expand(batch, size, size), grid_y[:, :, None].expand(batch, size, size)), dim=-1
    )
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(
    images: Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    generator: torch.Generator,
    flip_p: float = 0.0,
) -> Tensor:
    """Random crop of each sample resized to ``size x size`` (torchvision ``RandomResizedCrop``).

    Boxes are drawn by :func:`crop_boxes` and resampled by :func:`resized_crop`; with
    ``flip_p > 0`` each crop is also mirrored horizontally with that probability, in the same
    resampling pass (equivalent to a following :func:`horizontal_flip`).

    Returns:
        [B, C, size, size], same dtype as ``images``.
    """
    _check_images(images, generator)
    _check_probability(flip_p, "flip_p")
    batch, _, height, width = images.shape
    boxes = crop_boxes(batch, height, width, scale, ratio, generator=generator, device=images.device)
    flip = _bernoulli(batch, flip_p, images, generator) if flip_p > 0 else None
    return resized_crop(images, boxes, size, flip)


def horizontal_flip(images: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Mirror each sample left-right with probability ``p``."""
    _check_images(images, generator)
    _check_probability(p)
    selected = _bernoulli(images.shape[0], p, images, generator)
    return torch.where(_per_sample(selected), images.flip(-1), images)


# ----------------------------------------------------------------------------------------------
# colour
# ----------------------------------------------------------------------------------------------
def _shift_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue of RGB ``images`` by ``shift[B]`` turns, keeping saturation and value.

    Equivalent to torchvision's rgb -> hsv -> ((h + shift) mod 1) -> rgb, using the closed form
    ``channel = V - C * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6`` and n = 5, 3, 1
    for R, G, B, where V = max and C = max - min (the chroma) do not change. Works per channel
    plane to keep every intermediate small; ties between channels resolve as in torchvision
    (red, then green, then blue).
    """
    red, green, blue = images.unbind(dim=1)
    value = torch.maximum(torch.maximum(red, green), blue)
    chroma = value - torch.minimum(torch.minimum(red, green), blue)
    # Grey pixels have chroma 0 and numerators 0: any finite inverse gives hue 0 and keeps them grey.
    inverse_chroma = chroma.clamp_min(torch.finfo(images.dtype).tiny).reciprocal_()
    # Hue in sixths of a turn, in [-1, 5]: the branch depends on which channel is the maximum.
    hue_if_green_max = (blue - red).mul_(inverse_chroma).add_(2.0)
    hue_if_blue_max = (red - green).mul_(inverse_chroma).add_(4.0)
    hue6 = torch.where(
        value == red,
        (green - blue).mul_(inverse_chroma),
        torch.where(value == green, hue_if_green_max, hue_if_blue_max),
    )
    hue6.add_(6.0 * shift.view(-1, 1, 1))
    out = torch.empty_like(images)
    for channel, offset in enumerate((5.0, 3.0, 1.0)):
        k = hue6 + offset
        k.sub_(torch.floor(k * (1.0 / 6.0)).mul_(6.0))  # k mod 6, in [0, 6)
        ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
        torch.sub(value, ramp.mul_(chroma), out=out[:, channel])
    return out.clamp_(0.0, 1.0)


def color_jitter(
    images: Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    p: float,
    generator: torch.Generator,
) -> Tensor:
    """Random brightness, contrast, saturation and hue, applied to each sample with probability p.

    torchvision ``ColorJitter`` semantics per sample: brightness, contrast and saturation
    factors uniform in ``[max(0, 1 - x), 1 + x]``, hue shift uniform in ``[-hue, hue]`` turns;
    brightness scales the image, contrast blends it with its mean luma, saturation blends each
    pixel with its luma, hue rotates the HSV hue; every step clamps to [0, 1]. One difference:
    the order is fixed (brightness, contrast, saturation, hue) instead of a random permutation
    per call. A strength of 0 skips that step. For one-channel images only brightness and
    contrast apply. Samples not selected are returned unchanged (bit for bit).
    """
    _check_images(images, generator)
    _check_probability(p)
    for name, strength in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if strength < 0:
            raise ValueError(f"{name} must be >= 0, got {strength}")
    if not 0.0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue}")
    if p == 0.0:
        return images
    batch, channels = images.shape[:2]
    selected = _bernoulli(batch, p, images, generator)

    if brightness > 0:
        factor = _uniform((batch,), max(0.0, 1 - brightness), 1 + brightness, images, generator)
        out = (images * _per_sample(factor)).clamp_(0.0, 1.0)
    else:
        out = images.clone()  # the steps below work in place
    if contrast > 0:
        factor = _uniform((batch,), max(0.0, 1 - contrast), 1 + contrast, images, generator)
        # Mean luma per sample: the luma is linear, so it is the luma of the channel means.
        channel_means = out.mean(dim=(2, 3))
        if channels == 3:
            channel_means = channel_means @ channel_means.new_tensor(LUMA_WEIGHTS)
        _blend_(out, channel_means.view(-1, 1, 1, 1), factor)
    if channels == 3 and saturation > 0:
        factor = _uniform((batch,), max(0.0, 1 - saturation), 1 + saturation, images, generator)
        _blend_(out, rgb_to_grayscale(out), factor)
    if channels == 3 and hue > 0:
        out = _shift_hue(out, _uniform((batch,), -hue, hue, images, generator))
    return torch.where(_per_sample(selected), out, images)


def random_grayscale(images: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Replace each RGB sample by its luma (repeated over 3 channels) with probability ``p``.

    A no-op for one-channel images.
    """
    _check_images(images, generator)
    _check_probability(p)
    if images.shape[1] == 1 or p == 0.0:
        return images
    selected = _bernoulli(images.shape[0], p, images, generator)
    return torch.where(_per_sample(selected), rgb_to_grayscale(images).expand_as(images), images)


def _kernel_size(height: int, width: int, kernel_fraction: float) -> int:
    """Odd kernel size ``2 * floor(fraction * min(H, W) / 2) + 1``, at least 3 (SimCLR: 23 at 224)."""
    size = 2 * int(kernel_fraction * min(height, width) / 2) + 1
    return max(3, size)


def gaussian_blur(
    images: Tensor,
    sigma: tuple[float, float] = (0.1, 2.0),
    *,
    p: float,
    generator: torch.Generator,
    kernel_fraction: float = 0.1,
) -> Tensor:
    """Gaussian blur with a per-sample sigma uniform in ``sigma``, applied with probability ``p``.

    As in SimCLR, the kernel size is about ``kernel_fraction`` of the image size (odd, at least
    3: 23 px at 224, 3 px at 28-32); the kernel is truncated there and renormalised. The blur is
    separable (a horizontal then a vertical pass), each pass one grouped ``conv2d`` over the
    batch with reflect padding. Samples not selected are returned unchanged (bit for bit).
    """
    _check_images(images, generator)
    _check_probability(p)
    if not 0.0 < sigma[0] <= sigma[1]:
        raise ValueError(f"sigma must satisfy 0 < sigma[0] <= sigma[1], got {sigma}")
    if p == 0.0:
        return images
    batch, channels, height, width = images.shape
    kernel_size = _kernel_size(height, width, kernel_fraction)
    if kernel_size // 2 >= min(height, width):
        raise ValueError(
            f"blur kernel size {kernel_size} is too large for {height}x{width} images (reflect padding)"
        )
    selected = _bernoulli(batch, p, images, generator)
    sigmas = _uniform((batch,), sigma[0], sigma[1], images, generator)

    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernels = torch.exp(-0.5 * (offsets / sigmas.unsqueeze(1)) ** 2)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)  # [B, K]
    # One filter per (sample, channel): conv2d with groups = B * C on a [1, B * C, H, W] view.
    kernels = kernels.repeat_interleave(channels, dim=0)  # [B * C, K]
    planes = images.reshape(1, batch * channels, height, width)
    planes = F.pad(planes, (radius, radius, 0, 0), mode="reflect")
    planes = F.conv2d(planes, kernels.view(-1, 1, 1, kernel_size), groups=batch * channels)
    planes = F.pad(planes, (0, 0, radius, radius), mode="reflect")
    planes = F.conv2d(planes, kernels.view(-1, 1, kernel_size, 1), groups=batch * channels)
    return torch.where(_per_sample(selected), planes.view_as(images), images)


def solarize(images: Tensor, p: float, generator: torch.Generator, threshold: float = 0.5) -> Tensor:
    """Invert pixels at or above ``threshold`` (``x -> 1 - x``) in each sample with probability p."""
    _check_images(images, generator)
    _check_probability(p)
    if p == 0.0:
        return images
    selected = _bernoulli(images.shape[0], p, images, generator)
    # A per-sample threshold above every pixel value leaves the samples not selected unchanged.
    thresholds = torch.where(selected, threshold, math.inf).to(images.dtype)
    return torch.where(images >= _per_sample(thresholds), 1.0 - images, images)


def normalize(images: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """``(images - mean) / std`` per channel."""
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    if mean.shape[1] != images.shape[1] or std.shape[1] != images.shape[1]:
        raise ValueError(
            f"mean and std need one value per channel ({images.shape[1]}), "
            f"got {mean.shape[1]} and {std.shape[1]}"
        )
    return (images - mean) / std
