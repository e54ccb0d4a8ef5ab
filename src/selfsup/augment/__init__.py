"""Batched augmentations that run on the training device (see transforms.py and views.py)."""

from selfsup.augment.transforms import (
    color_jitter,
    gaussian_blur,
    horizontal_flip,
    normalize,
    random_grayscale,
    random_resized_crop,
    solarize,
)
from selfsup.augment.views import RECIPES, ViewMaker, ViewRecipe, crop_size, default_eval_size, seeded_generator

__all__ = [
    "RECIPES",
    "ViewMaker",
    "ViewRecipe",
    "color_jitter",
    "crop_size",
    "default_eval_size",
    "gaussian_blur",
    "horizontal_flip",
    "normalize",
    "random_grayscale",
    "random_resized_crop",
    "seeded_generator",
    "solarize",
]
