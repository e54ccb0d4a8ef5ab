"""Views of an image batch for joint-embedding methods: global crops, then local crops.

A :class:`ViewRecipe` says which augmentations make a view and how strong they are;
:data:`RECIPES` holds the published ones. A :class:`ViewMaker` turns a uint8 batch (already on
the training device) into the list of float, normalised views a method's ``forward`` takes::

    maker = ViewMaker(RECIPES["small-images"], mean=(0.286,), std=(0.353,))
    views = maker(images_uint8, seeded_generator(seed, step, images_uint8.device))

Crop sizes in every recipe are given for 28 px images (the data shipped here, :data:`RECIPE_IMAGE_SIZE`);
a run scales them to its images (:func:`crop_size`); built directly, for ImageNet, replace them with
``dataclasses.replace(recipe, global_size=224, local_size=96)``. Evaluation reads the whole image at
:func:`default_eval_size`.

Randomness comes only from the generator passed in. :func:`seeded_generator` derives it from
(seed, step), so the views of step t are the same in a fresh run and in a resumed one, and there
is no augmentation RNG state to checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.augment.transforms import (
    color_jitter,
    gaussian_blur,
    normalize,
    random_grayscale,
    random_resized_crop,
    solarize,
)

__all__ = ["RECIPES", "ViewMaker", "ViewRecipe", "crop_size", "default_eval_size", "seeded_generator"]

# Aspect-ratio range of every crop (torchvision's RandomResizedCrop default, used by all recipes).
CROP_RATIO = (3 / 4, 4 / 3)

#: The image side the recipes' crop sizes are given for.
RECIPE_IMAGE_SIZE = 28

#: Whole images are read at this multiple of the global crop side (at most their stored size).
#: A random resized crop shows objects larger than the whole image does at the same side, so an
#: encoder reads whole images best somewhat above its crop size (Touvron et al. 2019, FixRes:
#: 224 px crops, best read at 288). Measured for 16 px crops of Fashion-MNIST (BENCHMARKS.md
#: "Crop and evaluation sizes"): 16, 20, 24 and 28 px, best at 24.
EVAL_SIZE_RATIO = 1.5


#: Scaled global crops stay at least this large (or the whole image, when it is smaller):
#: fewer pixels hold too little of the object to learn from.
MIN_CROP_SIZE = 16


def crop_size(recipe_size: int, image_size: int) -> int:
    """A recipe's global crop side (given for :data:`RECIPE_IMAGE_SIZE` px images) for
    ``image_size`` px images, at least :data:`MIN_CROP_SIZE` or the whole image."""
    return max(min(image_size, MIN_CROP_SIZE), round(image_size * recipe_size / RECIPE_IMAGE_SIZE))


def default_eval_size(global_size: int, image_size: int) -> int:
    """The side evaluation reads whole images at: :data:`EVAL_SIZE_RATIO` x the global crop
    side, at most the stored ``image_size``, never below the crop side."""
    return max(global_size, min(image_size, round(EVAL_SIZE_RATIO * global_size)))


@dataclass(frozen=True)
class ViewRecipe:
    """How to make the views of one image.

    Each view is: random resized crop (area fraction in ``*_scale``, aspect ratio in
    [3/4, 4/3]) with a horizontal flip (``flip_p``), then colour jitter with probability
    ``jitter_p`` (strengths ``brightness``, ``contrast``, ``saturation``, ``hue``, torchvision
    semantics, fixed order), grayscale (``grayscale_p``), Gaussian blur and solarisation, then
    normalisation. Blur and solarisation probabilities are given per global view, the last value
    repeating, so asymmetric recipes (BYOL, DINO) can treat the two global views differently;
    local crops use ``local_blur_p`` and are never solarised (as in DINO and SwAV).

    Sequences may be given as lists (e.g. from YAML); they are stored as tuples. Invalid values
    raise ``ValueError`` naming the field.
    """

    global_crops: int = 2
    global_size: int = 28  # output size of global crops (for 28 px images: see crop_size)
    global_scale: tuple[float, float] = (0.2, 1.0)
    local_crops: int = 0  # multi-crop (SwAV/DINO): small crops after the global ones
    local_size: int = 12
    local_scale: tuple[float, float] = (0.05, 0.2)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: tuple[float, ...] = (0.0,)  # per global view, last value repeats (BYOL: (1.0, 0.1))
    solarize_p: tuple[float, ...] = (0.0,)  # per global view, last value repeats (BYOL: (0.0, 0.2))
    local_blur_p: float = 0.0  # blur probability of every local crop (SwAV, DINO: 0.5)

    def __post_init__(self) -> None:
        for name in ("global_scale", "local_scale", "blur_p", "solarize_p"):
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.global_crops < 1:
            raise ValueError(f"global_crops must be >= 1, got {self.global_crops}")
        if self.local_crops < 0:
            raise ValueError(f"local_crops must be >= 0, got {self.local_crops}")
        for name in ("global_size", "local_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("global_scale", "local_scale"):
            value = getattr(self, name)
            if len(value) != 2 or not 0.0 < value[0] <= value[1] <= 1.0:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high <= 1, got {value}")
        for name in ("blur_p", "solarize_p"):
            if not getattr(self, name):
                raise ValueError(f"{name} needs at least one probability")
        probabilities = {f.name: getattr(self, f.name) for f in fields(self) if f.name.endswith("_p")}
        for name, value in probabilities.items():
            for p in value if isinstance(value, tuple) else (value,):
                if not 0.0 <= p <= 1.0:
                    raise ValueError(f"{name} must be in [0, 1], got {value}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")

    def global_blur_p(self, view: int) -> float:
        """Blur probability of global view ``view`` (the last listed value repeats)."""
        return self.blur_p[min(view, len(self.blur_p) - 1)]

    def global_solarize_p(self, view: int) -> float:
        """Solarisation probability of global view ``view`` (the last listed value repeats)."""
        return self.solarize_p[min(view, len(self.solarize_p) - 1)]


RECIPES: dict[str, ViewRecipe] = {
    # SimCLR (Chen et al. 2020, appendix A): crop 0.08-1, flip, colour distortion of strength 1
    # (jitter 0.8/0.8/0.8/0.2 with p 0.8, grayscale p 0.2) and Gaussian blur p 0.5 with sigma
    # 0.1-2 and a kernel of 10% of the image. The paper uses the blur on ImageNet only and drops
    # it for CIFAR-10; at 28-32 px prefer "small-images".
    "simclr": ViewRecipe(
        global_scale=(0.08, 1.0),
        brightness=0.8,
        contrast=0.8,
        saturation=0.8,
        hue=0.2,
        blur_p=(0.5,),
    ),
    # The common recipe for 28-32 px images: MoCo v2's augmentation (Chen et al. 2020, "Improved
    # baselines"; crop 0.2-1, jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale p 0.2) without its
    # blur, as in the MoCo CIFAR-10 demo and the CIFAR setups of lightly and solo-learn (which
    # mostly keep crop 0.08-1; 0.2 is kinder to 28 px images). Crops of 16 px from 28 px
    # images (selfsup's choice: a third of the compute per step, so three times the epochs in a
    # budget; BENCHMARKS.md "Crop and evaluation sizes": better in every column after 15 minutes).
    "small-images": ViewRecipe(global_size=16),
    # BYOL (Grill et al. 2020, table 6): crop 0.08-1, jitter 0.4/0.4/0.2/0.1 with p 0.8,
    # grayscale p 0.2, blur p 1.0 / 0.1 and solarisation p 0.0 / 0.2 on the two views.
    "byol": ViewRecipe(
        global_scale=(0.08, 1.0),
        saturation=0.2,
        blur_p=(1.0, 0.1),
        solarize_p=(0.0, 0.2),
    ),
    # SwAV multi-crop (Caron et al. 2020): 2 global crops (scale 0.14-1, 224 px) + 6 local crops
    # (0.05-0.14, 96 px; 12 px here is 96/224 of 28), SimCLR's colour distortion and blur p 0.5
    # on every crop (blur meant for ImageNet-sized images, see "simclr").
    "multicrop": ViewRecipe(
        global_scale=(0.14, 1.0),
        local_crops=6,
        local_scale=(0.05, 0.14),
        brightness=0.8,
        contrast=0.8,
        saturation=0.8,
        hue=0.2,
        blur_p=(0.5,),
        local_blur_p=0.5,
    ),
    # PAWS on CIFAR-10 (Assran et al. 2021, suncet configs/paws/cifar10_train.yaml and
    # src/data_manager.py): 2 global crops of the whole side at scale 0.75-1 (with multi-crop)
    # + 6 local crops at 0.3-0.75 (18 of 32 px: 16 of 28), flip, colour distortion of strength
    # 0.5 (jitter 0.4/0.4/0.4/0.1 with p 0.8) and solarisation p 0.2, no grayscale, no blur
    # (its Equalize p 0.2 is left out: no such transform here). SwAV's ImageNet multi-crop
    # instead leaves 2x2-pixel local crops of small images, on which views cannot agree.
    "paws": ViewRecipe(
        global_scale=(0.75, 1.0),
        local_crops=6,
        local_size=16,
        local_scale=(0.3, 0.75),
        grayscale_p=0.0,
        solarize_p=(0.2,),
    ),
    # DINO (Caron et al. 2021, main_dino.py DataAugmentationDINO): 2 global crops (0.4-1) + 8
    # local crops (0.05-0.4), jitter 0.4/0.4/0.2/0.1 with p 0.8, grayscale p 0.2, blur p 1.0 /
    # 0.1 and solarisation p 0.0 / 0.2 on the global crops, blur p 0.5 on the local crops.
    "dino": ViewRecipe(
        global_scale=(0.4, 1.0),
        local_crops=8,
        local_scale=(0.05, 0.4),
        saturation=0.2,
        blur_p=(1.0, 0.1),
        solarize_p=(0.0, 0.2),
        local_blur_p=0.5,
    ),
    # MAE (He et al. 2022, main_pretrain.py): one view, crop 0.2-1 and flip, nothing else: the
    # masking is the task, and colour augmentation did not help (section 4, Table 1f).
    "mae": ViewRecipe(global_crops=1, global_scale=(0.2, 1.0), jitter_p=0.0, grayscale_p=0.0),
    # I-JEPA (Assran et al. 2023, configs/in1k_vith14_ep300.yaml: crop_scale [0.3, 1.0],
    # use_horizontal_flip false, no colour jitter, blur or solarisation): one view, the
    # context and target blocks are both cut from it.
    "ijepa": ViewRecipe(global_crops=1, global_scale=(0.3, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0),
    # LeJEPA (Balestriero & LeCun 2025, "Experiment Details 1": V = 8 views, V_g = 2 global;
    # reference README "GOTO hyperparameters"): 2 global crops (0.3-1, 224 px) + 6 local crops
    # (0.05-0.3, 98 px), flip, jitter 0.4/0.4/0.2/0.1 with p 0.8, grayscale p 0.2, blur p 0.5
    # and solarisation p 0.2 on every crop (local crops are never solarised here, as in DINO).
    "lejepa": ViewRecipe(
        global_scale=(0.3, 1.0),
        local_crops=6,
        local_scale=(0.05, 0.3),
        saturation=0.2,
        blur_p=(0.5,),
        solarize_p=(0.2,),
        local_blur_p=0.5,
    ),
}


def seeded_generator(
    seed: int, step: int, device: torch.device | str = "cpu", *, stream: int = 0
) -> torch.Generator:
    """A generator on ``device`` seeded by a hash of ``(seed, step, stream)``.

    The augmentations of training step ``step`` depend only on ``seed`` and ``step``, never on
    how many batches were augmented before in this process, so a resumed run draws exactly the
    views the uninterrupted run would have drawn; this is why the trainer's checkpoint holds no
    augmentation RNG state. The hash (BLAKE2b) decorrelates neighbouring steps and seeds.
    ``stream`` separates independent draws at the same step, e.g. pass the process rank so that
    ranks do not give the same crop boxes to their i-th samples.
    """
    key = f"selfsup-augment/{seed}/{step}/{stream}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return generator


def _to_float(images_uint8: Tensor) -> Tensor:
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 image batch, got dtype {images_uint8.dtype}")
    if images_uint8.ndim != 4 or images_uint8.shape[1] not in (1, 3):
        raise ValueError(
            f"expected images of shape [B, C, H, W] with C in (1, 3), got {tuple(images_uint8.shape)}"
        )
    return images_uint8.float().div_(255.0)


class ViewMaker:
    """Makes the augmented views of a uint8 batch according to a :class:`ViewRecipe`.

    Runs on the batch's device, all samples at once; loops only over views. Returns global
    crops first (``recipe.global_crops`` tensors of ``global_size``), then local crops
    (``recipe.local_crops`` of ``local_size``), each float32 [B, C, size, size], normalised with
    ``mean`` and ``std`` (one value per channel, in units of [0, 1] pixel values).
    ``eval_size`` is the side of :meth:`eval_view` (default: ``recipe.global_size``).
    """

    def __init__(self, recipe: ViewRecipe, mean: Sequence[float], std: Sequence[float], eval_size: int | None = None) -> None:
        if len(mean) != len(std) or len(mean) not in (1, 3):
            raise ValueError(f"mean and std need 1 or 3 values each, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        if eval_size is not None and eval_size < 1:
            raise ValueError(f"eval_size must be >= 1, got {eval_size}")
        self.recipe = recipe
        self.eval_size = eval_size or recipe.global_size
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    @property
    def view_sizes(self) -> list[int]:
        """Output size of each view, in the order ``__call__`` returns them."""
        recipe = self.recipe
        return [recipe.global_size] * recipe.global_crops + [recipe.local_size] * recipe.local_crops

    def __call__(self, images_uint8: Tensor, generator: torch.Generator) -> list[Tensor]:
        images = self._prepare(images_uint8)
        recipe = self.recipe
        views = [
            self._view(
                images,
                recipe.global_size,
                recipe.global_scale,
                blur_p=recipe.global_blur_p(index),
                solarize_p=recipe.global_solarize_p(index),
                generator=generator,
            )
            for index in range(recipe.global_crops)
        ]
        views += [
            self._view(
                images,
                recipe.local_size,
                recipe.local_scale,
                blur_p=recipe.local_blur_p,
                solarize_p=0.0,
                generator=generator,
            )
            for _ in range(recipe.local_crops)
        ]
        return views

    def eval_view(self, images_uint8: Tensor) -> Tensor:
        """The deterministic view for evaluation and embedding.

        The whole image, resized to ``eval_size x eval_size`` if it is not already that size
        (bilinear, antialiased when shrinking), and normalised; no crop, flip or colour change.
        """
        images = self._prepare(images_uint8)
        size = self.eval_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        return normalize(images, self.mean, self.std)

    def _prepare(self, images_uint8: Tensor) -> Tensor:
        images = _to_float(images_uint8)
        if images.shape[1] != len(self.mean):
            raise ValueError(
                f"images have {images.shape[1]} channels but mean/std have {len(self.mean)} values"
            )
        return images

    def _view(
        self,
        images: Tensor,
        size: int,
        scale: tuple[float, float],
        *,
        blur_p: float,
        solarize_p: float,
        generator: torch.Generator,
    ) -> Tensor:
        recipe = self.recipe
        view = random_resized_crop(
            images, size, scale, CROP_RATIO, generator=generator, flip_p=recipe.flip_p
        )
        view = color_jitter(
            view,
            recipe.brightness,
            recipe.contrast,
            recipe.saturation,
            recipe.hue,
            recipe.jitter_p,
            generator,
        )
        view = random_grayscale(view, recipe.grayscale_p, generator)
        view = gaussian_blur(view, p=blur_p, generator=generator)
        view = solarize(view, solarize_p, generator)
        return normalize(view, self.mean, self.std)
