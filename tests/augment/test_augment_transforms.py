"""Tests of the batched augmentation ops in selfsup.augment.transforms."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfsup.augment import transforms as T


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_images(batch: int = 8, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=generator(seed + 1000))


# Every random op with typical arguments, as f(images, generator).
OPS = {
    "random_resized_crop": lambda x, g: T.random_resized_crop(x, 12, generator=g, flip_p=0.5),
    "horizontal_flip": lambda x, g: T.horizontal_flip(x, 0.5, g),
    "color_jitter": lambda x, g: T.color_jitter(x, 0.8, 0.8, 0.8, 0.2, 0.8, g),
    "random_grayscale": lambda x, g: T.random_grayscale(x, 0.5, g),
    "gaussian_blur": lambda x, g: T.gaussian_blur(x, p=0.5, generator=g),
    "solarize": lambda x, g: T.solarize(x, 0.5, g),
}


# ---------------------------------------------------------------------------------------------
# shapes, ranges, reproducibility, errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_and_range(name: str, channels: int) -> None:
    images = random_images(channels=channels)
    out = OPS[name](images, generator())
    size = 12 if name == "random_resized_crop" else 16
    assert out.shape == (8, channels, size, size)
    assert out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("name", sorted(OPS))
def test_same_seed_same_output_different_seed_different(name: str) -> None:
    images = random_images(batch=32)
    first = OPS[name](images, generator(7))
    assert torch.equal(first, OPS[name](images, generator(7)))
    assert not torch.equal(first, OPS[name](images, generator(8)))


def test_global_rng_untouched() -> None:
    images = random_images()
    state = torch.get_rng_state()
    for op in OPS.values():
        op(images, generator())
    assert torch.equal(state, torch.get_rng_state())


def test_bad_inputs_give_clear_errors() -> None:
    with pytest.raises(TypeError, match="float"):
        T.horizontal_flip(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), 0.5, generator())
    with pytest.raises(ValueError, match="C in"):
        T.solarize(torch.zeros(2, 2, 8, 8), 0.5, generator())
    with pytest.raises(ValueError, match="p must be in"):
        T.solarize(random_images(), 1.5, generator())
    with pytest.raises(ValueError, match="scale"):
        T.random_resized_crop(random_images(), 8, scale=(0.5, 0.2), generator=generator())
    with pytest.raises(ValueError, match="hue"):
        T.color_jitter(random_images(), 0.4, 0.4, 0.4, 0.7, 1.0, generator())
    with pytest.raises(ValueError, match="one value per channel"):
        T.normalize(random_images(), (0.5,) * 2, (0.5,) * 2)


# ---------------------------------------------------------------------------------------------
# crops
# ---------------------------------------------------------------------------------------------
def test_full_box_crop_returns_the_image() -> None:
    images = random_images(channels=3, size=20)
    out = T.random_resized_crop(images, 20, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=generator())
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


def test_crop_matches_interpolate_of_the_sliced_box() -> None:
    # Shrinking integer boxes: grid_sample must match an independent slice + F.interpolate.
    images = random_images(batch=3, channels=3, size=24)
    boxes = [(0, 0, 24, 24), (3, 5, 16, 12), (10, 2, 12, 20)]  # (top, left, height, width)
    size = 8
    out = T.resized_crop(images, torch.tensor(boxes, dtype=torch.float32), size)
    for index, (top, left, height, width) in enumerate(boxes):
        box = images[index : index + 1, :, top : top + height, left : left + width]
        expected = F.interpolate(box, size=(size, size), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[index : index + 1], expected, atol=1e-5, rtol=0)


def test_random_crop_of_a_gradient_image_matches_the_sampled_boxes() -> None:
    # Bilinear interpolation is exact on a linear image, so each output pixel is the linear
    # function at its source point: (x, y) = (left, top) + (i + 0.5) * box / size - 0.5,
    # clamped to the image (border replication). The boxes are recovered by redrawing them
    # with the same seed.
    batch, height, width, size = 64, 20, 30, 16
    ys, xs = torch.meshgrid(torch.arange(float(height)), torch.arange(float(width)), indexing="ij")
    fx_image, fy_image = xs / (width - 1), ys / (height - 1)
    gradient = torch.stack((fx_image, fy_image, 0.5 * fx_image + 0.25 * fy_image))
    images = gradient.expand(batch, 3, height, width).contiguous()
    out = T.random_resized_crop(images, size, scale=(0.05, 1.0), generator=generator(3))
    boxes = T.crop_boxes(batch, height, width, (0.05, 1.0), generator=generator(3))
    top, left, box_h, box_w = boxes.T[:, :, None]
    steps = torch.arange(size, dtype=torch.float32) + 0.5
    source_x = (left + steps * box_w / size - 0.5).clamp(0, width - 1)  # [B, size]
    source_y = (top + steps * box_h / size - 0.5).clamp(0, height - 1)
    fx = (source_x / (width - 1))[:, None, :]
    fy = (source_y / (height - 1))[:, :, None]
    torch.testing.assert_close(out[:, 0], fx.expand(-1, size, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 1], fy.expand(-1, -1, size), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 2], 0.5 * fx + 0.25 * fy, atol=1e-5, rtol=0)


def test_crop_grid_is_the_affine_grid_of_the_box() -> None:
    images = random_images(batch=32, size=20)
    boxes = T.crop_boxes(32, 20, 20, generator=generator())
    flip = torch.rand(32, generator=generator(1)) < 0.5
    top, left, box_h, box_w = boxes.T
    sign = 1.0 - 2.0 * flip.float()
    zeros = torch.zeros(32)
    theta = torch.stack(
        (
            torch.stack((sign * box_w / 20, zeros, (2 * left + box_w) / 20 - 1), dim=1),
            torch.stack((zeros, box_h / 20, (2 * top + box_h) / 20 - 1), dim=1),
        ),
        dim=1,
    )
    grid = F.affine_grid(theta, [32, 3, 12, 12], align_corners=False)
    expected = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(T.resized_crop(images, boxes, 12, flip=flip), expected, atol=1e-5, rtol=0)


def test_crop_boxes_follow_random_resized_crop_distribution() -> None:
    # With these ranges every first try fits, so area fraction and log aspect are uniform.
    height, width = 40, 50
    boxes = T.crop_boxes(20_000, height, width, scale=(0.1, 0.3), ratio=(3 / 4, 4 / 3), generator=generator())
    top, left, box_h, box_w = boxes.T
    fraction = box_h * box_w / (height * width)
    log_aspect = torch.log(box_w / box_h)
    assert fraction.min() >= 0.1 - 1e-5 and fraction.max() <= 0.3 + 1e-5
    assert abs(fraction.mean().item() - 0.2) < 0.005
    assert log_aspect.min() >= math.log(3 / 4) - 1e-5 and log_aspect.max() <= math.log(4 / 3) + 1e-5
    assert abs(log_aspect.mean().item()) < 0.01
    assert top.min() >= 0 and left.min() >= 0
    assert (top + box_h).max() <= height + 1e-4 and (left + box_w).max() <= width + 1e-4
    # Offsets are uniform over the feasible positions.
    relative_left = left / (width - box_w)
    assert abs(relative_left.mean().item() - 0.5) < 0.01


def test_crop_boxes_always_fit_and_fall_back_to_centred_clamped_ratio() -> None:
    boxes = T.crop_boxes(5000, 30, 30, scale=(0.08, 1.0), generator=generator())
    top, left, box_h, box_w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + box_h <= 30 + 1e-4).all() and (left + box_w <= 30 + 1e-4).all()
    # No box of aspect 2 covering the whole image fits: fallback is the full width, height
    # width / 2, centred.
    fallback = T.crop_boxes(4, 30, 30, scale=(1.0, 1.0), ratio=(2.0, 2.0), generator=generator())
    torch.testing.assert_close(fallback, torch.tensor([[7.5, 0.0, 15.0, 30.0]] * 4))


def test_flip_folded_into_the_crop_mirrors_it() -> None:
    images = random_images(batch=16, size=20)
    boxes = T.crop_boxes(16, 20, 20, generator=generator())
    flip = torch.arange(16) % 2 == 0
    plain = T.resized_crop(images, boxes, 12)
    mirrored = T.resized_crop(images, boxes, 12, flip=flip)
    torch.testing.assert_close(mirrored[flip], plain[flip].flip(-1), atol=1e-5, rtol=0)
    assert torch.equal(mirrored[~flip], plain[~flip])


def test_crop_flip_probability() -> None:
    # Full-image crops, so a flipped sample is exactly the mirrored image.
    images = random_images(batch=10_000, channels=1, size=4)
    out = T.random_resized_crop(
        images, 4, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=generator(), flip_p=0.3
    )
    flipped = (out - images.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    unflipped = (out - images).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert (flipped ^ unflipped).all()
    assert abs(flipped.float().mean().item() - 0.3) < 0.02


# ---------------------------------------------------------------------------------------------
# flips and probabilities
# ---------------------------------------------------------------------------------------------
def test_flip_p1_is_torch_flip_and_p0_is_identity() -> None:
    images = random_images()
    assert torch.equal(T.horizontal_flip(images, 1.0, generator()), torch.flip(images, dims=[-1]))
    assert torch.equal(T.horizontal_flip(images, 0.0, generator()), images)


def changed(out: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return (out != images).flatten(1).any(dim=1)


# Each op, with arguments that change every selected sample of random 3x4x4 images.
PROBABILITY_OPS = {
    "horizontal_flip": lambda x, p, g: T.horizontal_flip(x, p, g),
    "color_jitter": lambda x, p, g: T.color_jitter(x, 0.4, 0.4, 0.4, 0.1, p, g),
    "random_grayscale": lambda x, p, g: T.random_grayscale(x, p, g),
    "gaussian_blur": lambda x, p, g: T.gaussian_blur(x, sigma=(1.0, 2.0), p=p, generator=g),
    "solarize": lambda x, p, g: T.solarize(x, p, g, threshold=0.0),
}


@pytest.mark.parametrize("name", sorted(PROBABILITY_OPS))
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_probability_is_respected(name: str, p: float) -> None:
    images = random_images(batch=10_000, channels=3, size=4)
    out = PROBABILITY_OPS[name](images, p, generator(int(p * 10)))
    fraction = changed(out, images).float().mean().item()
    assert abs(fraction - p) < 0.02  # std of the fraction is at most 0.005


@pytest.mark.parametrize("name", sorted(PROBABILITY_OPS))
def test_probability_zero_and_one(name: str) -> None:
    images = random_images(batch=64, channels=3, size=4)
    assert torch.equal(PROBABILITY_OPS[name](images, 0.0, generator()), images)
    assert changed(PROBABILITY_OPS[name](images, 1.0, generator()), images).all()


# ---------------------------------------------------------------------------------------------
# colour
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
def test_brightness_is_a_per_sample_scale_in_range(channels: int) -> None:
    images = 0.1 + 0.5 * random_images(batch=256, channels=channels)  # in [0.1, 0.6]: no clamping
    out = T.color_jitter(images, 0.5, 0.0, 0.0, 0.0, 1.0, generator())
    factor = (out / images).flatten(1)
    per_sample = factor.mean(dim=1)
    torch.testing.assert_close(factor, per_sample[:, None].expand_as(factor), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, images * per_sample.view(-1, 1, 1, 1), atol=1e-6, rtol=1e-6)
    assert per_sample.min() >= 0.5 - 1e-5 and per_sample.max() <= 1.5 + 1e-5
    assert per_sample.min() < 0.6 and per_sample.max() > 1.4  # spread over the whole range
    # Bright images are clamped to 1.
    bright = T.color_jitter(torch.ones(64, channels, 4, 4), 0.5, 0.0, 0.0, 0.0, 1.0, generator())
    assert bright.max() == 1.0
    assert (bright.flatten(1).amax(dim=1) < 1.0).any()  # factors below 1 darken


@pytest.mark.parametrize("channels", [1, 3])
def test_contrast_blends_with_the_mean_luma(channels: int) -> None:
    images = 0.3 + 0.4 * random_images(batch=64, channels=channels)  # factors <= 1.5 stay in [0, 1]
    out = T.color_jitter(images, 0.0, 0.5, 0.0, 0.0, 1.0, generator())
    weights = torch.tensor([0.299, 0.587, 0.114] if channels == 3 else [1.0]).view(1, channels, 1, 1)
    mean_luma = (images * weights).sum(dim=1).mean(dim=(1, 2)).view(-1, 1, 1, 1)
    # out - mean = factor * (images - mean): recover the factor by least squares, check the fit.
    centred, response = (images - mean_luma).flatten(1), (out - mean_luma).flatten(1)
    factor = (centred * response).sum(1) / (centred * centred).sum(1)
    expected = mean_luma + factor.view(-1, 1, 1, 1) * (images - mean_luma)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert factor.min() >= 0.5 - 1e-4 and factor.max() <= 1.5 + 1e-4


def test_saturation_keeps_the_luma_and_hue_keeps_value_and_chroma() -> None:
    images = 0.2 + 0.6 * random_images(batch=64, channels=3)
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    saturated = T.color_jitter(images, 0.0, 0.0, 0.3, 0.0, 1.0, generator())
    assert not torch.allclose(saturated, images)
    torch.testing.assert_close((saturated * weights).sum(1), (images * weights).sum(1), atol=1e-5, rtol=0)
    hue_shifted = T.color_jitter(images, 0.0, 0.0, 0.0, 0.5, 1.0, generator())
    assert not torch.allclose(hue_shifted, images)
    torch.testing.assert_close(hue_shifted.amax(1), images.amax(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(hue_shifted.amin(1), images.amin(1), atol=1e-5, rtol=0)


def test_hue_shift_matches_colorsys() -> None:
    images = random_images(batch=6, channels=3, size=5)
    images[0, :, 0, :] = images[0, :1, 0, :]  # grey pixels
    images[1, 1, 1, :] = images[1, 0, 1, :]  # ties between channels
    shifts = torch.tensor([0.0, 0.1, -0.1, 0.5, -0.5, 0.37])
    out = T._shift_hue(images, shifts)
    expected = np.empty_like(images.numpy())
    for b in range(images.shape[0]):
        for i in range(images.shape[2]):
            for j in range(images.shape[3]):
                h, s, v = colorsys.rgb_to_hsv(*images[b, :, i, j].tolist())
                expected[b, :, i, j] = colorsys.hsv_to_rgb((h + shifts[b].item()) % 1.0, s, v)
    torch.testing.assert_close(out, torch.from_numpy(expected), atol=1e-5, rtol=0)


def test_pure_colours_rotate_by_thirds() -> None:
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(3, 3, 2, 2)
    out = T._shift_hue(red, torch.tensor([1 / 3, 2 / 3, -1 / 3]))
    green, blue = [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
    torch.testing.assert_close(out[:, :, 0, 0], torch.tensor([green, blue, blue]), atol=1e-5, rtol=0)


def test_single_channel_jitter_ignores_saturation_and_hue() -> None:
    images = random_images(channels=1)
    assert torch.equal(T.color_jitter(images, 0.0, 0.0, 0.8, 0.3, 1.0, generator()), images)


def test_grayscale_uses_itu_r_601_luma_and_equal_channels() -> None:
    primaries = torch.eye(3).view(3, 3, 1, 1).expand(3, 3, 4, 4)
    out = T.random_grayscale(primaries, 1.0, generator())
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([0.299, 0.587, 0.114]))
    images = random_images()
    gray = T.random_grayscale(images, 1.0, generator())
    torch.testing.assert_close(gray[:, 0], 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2])


def test_grayscale_is_a_no_op_on_one_channel() -> None:
    images = random_images(channels=1)
    assert torch.equal(T.random_grayscale(images, 1.0, generator()), images)


# ---------------------------------------------------------------------------------------------
# blur, solarize, normalize
# ---------------------------------------------------------------------------------------------
def test_kernel_size_is_about_a_tenth_of_the_image() -> None:
    assert T._kernel_size(224, 224, 0.1) == 23  # SimCLR on ImageNet
    assert T._kernel_size(96, 96, 0.1) == 9
    assert T._kernel_size(28, 28, 0.1) == 3
    assert T._kernel_size(8, 8, 0.1) == 3


def test_blur_preserves_constants_and_reduces_noise_variance() -> None:
    constant = torch.full((4, 3, 32, 32), 0.37)
    torch.testing.assert_close(T.gaussian_blur(constant, p=1.0, generator=generator()), constant)
    noise = random_images(batch=16, size=32)
    blurred = T.gaussian_blur(noise, sigma=(1.0, 2.0), p=1.0, generator=generator())
    assert (blurred.var(dim=(1, 2, 3)) < 0.6 * noise.var(dim=(1, 2, 3))).all()
    torch.testing.assert_close(blurred.mean(), noise.mean(), atol=0.01, rtol=0)


def test_blur_matches_an_independent_2d_convolution() -> None:
    # A fixed sigma makes the kernel known; the reference is a dense (non-separable) 9x9
    # Gaussian built with numpy, applied with reflect padding.
    sigma = 1.3
    images = random_images(batch=2, channels=3, size=32)
    out = T.gaussian_blur(images, sigma=(sigma, sigma), p=1.0, generator=generator(), kernel_fraction=0.3)
    taps = np.arange(-4, 5)
    kernel_1d = np.exp(-(taps**2) / (2 * sigma**2))
    kernel_2d = np.outer(kernel_1d, kernel_1d)
    kernel_2d /= kernel_2d.sum()
    weight = torch.tensor(kernel_2d, dtype=torch.float32).expand(3, 1, 9, 9)
    expected = F.conv2d(F.pad(images[:1], (4, 4, 4, 4), mode="reflect"), weight, groups=3)
    torch.testing.assert_close(out[:1], expected, atol=1e-5, rtol=0)


def test_solarize_closed_form() -> None:
    images = random_images()
    out = T.solarize(images, 1.0, generator())
    torch.testing.assert_close(out, torch.where(images >= 0.5, 1 - images, images))
    out = T.solarize(images, 1.0, generator(), threshold=0.8)
    torch.testing.assert_close(out, torch.where(images >= 0.8, 1 - images, images))


def test_normalize_closed_form() -> None:
    images = random_images()
    out = T.normalize(images, (0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.25, 2.0]).view(1, 3, 1, 1)
    expected = (images - mean) / std
    torch.testing.assert_close(out, expected)
