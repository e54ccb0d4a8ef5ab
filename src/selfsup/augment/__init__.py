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
from selfsup.augment.views import RECIPES, ViewMaker, ViewRecipe, seeded_generator

__all__ = [
    "RECIPES",
    "ViewMaker",
    "ViewRecipe",
    "color_jitter",
    "gaussian_blur",
    "horizontal_flip",
    "normalize",
    "random_grayscale",
    "random_resized_crop",
    "seeded_generator",
    "solarize",
]
