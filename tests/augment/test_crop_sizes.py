"""Which crop and evaluation sizes a run resolves: the recipes' sizes scaled to the images."""

from __future__ import annotations

import pytest

from selfsup import config as config_module
from selfsup import runs
from selfsup.augment import crop_size, default_eval_size
from selfsup.config import Config
from selfsup.data import load_splits


@pytest.mark.parametrize("image, crop, whole", [
    (8, 8, 8),  # tiny images are kept whole
    (16, 16, 16),
    (28, 16, 24),  # the small-images recipe's own size, read at 1.5 x
    (32, 18, 27),
    (224, 128, 192),
])
def test_the_small_images_recipe_scales_with_the_images(image, crop, whole):
    assert crop_size(16, image) == crop and default_eval_size(crop, image) == whole
    assert crop_size(28, image) == image  # recipes made for whole 28 px images keep the whole side


def test_evaluation_never_reads_less_than_the_crop():
    assert default_eval_size(56, 28) == 56  # crops asked larger than the images
    assert default_eval_size(20, 28) == 28  # 1.5 x 20 is more than the stored 28


@pytest.fixture(scope="module")
def digits_at_28():
    return load_splits("digits", None, 28, 0)[0]


@pytest.mark.parametrize("overrides, sizes", [
    ([], (16, 24)),  # simclr: small-images, 16 of 28 px, read at 24
    (["method.name=dino", "augment.recipe=dino"], (28, 28)),  # DINO's multi-crop recipe keeps whole global crops
    (["augment.global_size=20"], (20, 28)),
    (["augment.eval_size=16"], (16, 16)),
])
def test_a_run_resolves_its_crop_and_evaluation_sizes(digits_at_28, overrides, sizes):
    config = config_module.apply_overrides(Config(), ["data.source=digits", "data.size=28", *overrides])
    augment = runs.resolve(config, digits_at_28).augment
    assert (augment.global_size, augment.eval_size) == sizes
