"""Tests of ViewRecipe, RECIPES, ViewMaker and seeded_generator."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from selfsup.augment import RECIPES, ViewMaker, ViewRecipe, seeded_generator
from selfsup.augment import transforms as T


def uint8_images(batch: int = 16, channels: int = 3, size: int = 28, seed: int = 0) -> torch.Tensor:
    source = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8, generator=source)


def identity_maker(recipe: ViewRecipe, channels: int) -> ViewMaker:
    """A maker whose normalisation is the identity, so views show the [0, 1] pixel values."""
    return ViewMaker(recipe, mean=(0.0,) * channels, std=(1.0,) * channels)


# A recipe whose crops are the whole image (no box of area 1 and aspect != 1 fits, so the crop
# falls back to the full image) and with no flip or colour change: only blur/solarize act.
STILL = ViewRecipe(global_scale=(1.0, 1.0), local_scale=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)


# ---------------------------------------------------------------------------------------------
# recipes
# ---------------------------------------------------------------------------------------------
def test_recipes_hold_the_published_settings() -> None:
    assert {"simclr", "small-images", "byol", "multicrop", "dino"} <= set(RECIPES)
    simclr = RECIPES["simclr"]
    assert simclr.global_scale == (0.08, 1.0)
    assert (simclr.brightness, simclr.contrast, simclr.saturation, simclr.hue) == (0.8, 0.8, 0.8, 0.2)
    assert simclr.blur_p == (0.5,)
    small = RECIPES["small-images"]
    assert small.global_scale == (0.2, 1.0) and small.blur_p == (0.0,) and small.jitter_p == 0.8
    byol = RECIPES["byol"]
    assert [byol.global_blur_p(v) for v in range(3)] == [1.0, 0.1, 0.1]
    assert [byol.global_solarize_p(v) for v in range(2)] == [0.0, 0.2]
    multicrop = RECIPES["multicrop"]
    assert (multicrop.global_crops, multicrop.local_crops) == (2, 6)
    assert (RECIPES["dino"].global_crops, RECIPES["dino"].local_crops) == (2, 8)


def test_recipe_coerces_lists_and_rejects_bad_values() -> None:
    recipe = ViewRecipe(global_scale=[0.3, 1.0], blur_p=[1.0, 0.1])  # type: ignore[arg-type]
    assert recipe.global_scale == (0.3, 1.0) and recipe.blur_p == (1.0, 0.1)
    hash(recipe)  # frozen and hashable, lists became tuples
    for bad, field in [
        (dict(jitter_p=1.5), "jitter_p"),
        (dict(solarize_p=(0.0, -0.1)), "solarize_p"),
        (dict(global_scale=(0.5, 0.2)), "global_scale"),
        (dict(local_scale=(0.1,)), "local_scale"),
        (dict(global_crops=0), "global_crops"),
        (dict(blur_p=()), "blur_p"),
        (dict(hue=0.6), "hue"),
    ]:
        with pytest.raises(ValueError, match=field):
            ViewRecipe(**bad)


# ---------------------------------------------------------------------------------------------
# views
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_views_number_order_sizes_and_range(name: str, channels: int) -> None:
    recipe = RECIPES[name]
    maker = identity_maker(recipe, channels)
    views = maker(uint8_images(channels=channels), seeded_generator(0, 0))
    expected_sizes = [recipe.global_size] * recipe.global_crops + [recipe.local_size] * recipe.local_crops
    assert maker.view_sizes == expected_sizes
    assert [view.shape for view in views] == [(16, channels, size, size) for size in expected_sizes]
    for view in views:
        assert view.dtype == torch.float32
        assert view.min() >= 0.0 and view.max() <= 1.0


def test_views_are_normalised_with_mean_and_std() -> None:
    images = uint8_images(channels=3)
    mean, std = (0.2, 0.4, 0.6), (0.5, 0.25, 0.125)
    raw = identity_maker(RECIPES["small-images"], 3)(images, seeded_generator(5, 1))
    normalised = ViewMaker(RECIPES["small-images"], mean, std)(images, seeded_generator(5, 1))
    for plain, view in zip(raw, normalised):
        torch.testing.assert_close(view, T.normalize(plain, mean, std))


def test_same_seed_same_views_different_seed_or_step_different() -> None:
    maker = ViewMaker(RECIPES["multicrop"], mean=(0.5,), std=(0.25,))
    images = uint8_images(channels=1)
    first = maker(images, seeded_generator(1, 10))
    again = maker(images, seeded_generator(1, 10))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    for other in (maker(images, seeded_generator(2, 10)), maker(images, seeded_generator(1, 11))):
        assert all(not torch.equal(a, b) for a, b in zip(first, other))
    # The two global views of one call differ from each other.
    assert not torch.equal(first[0], first[1])


def test_view_maker_never_uses_the_global_rng() -> None:
    state = torch.get_rng_state()
    ViewMaker(RECIPES["byol"], mean=(0.5,) * 3, std=(0.25,) * 3)(uint8_images(), seeded_generator(0, 0))
    assert torch.equal(state, torch.get_rng_state())


def test_blur_and_solarize_probabilities_are_per_global_view() -> None:
    recipe = dataclasses.replace(STILL, global_crops=3, local_crops=2, solarize_p=(0.0, 1.0))
    images = uint8_images(channels=3)
    floats = images.float() / 255
    views = identity_maker(recipe, 3)(images, seeded_generator(0, 0))
    solarized = T.solarize(floats, 1.0, torch.Generator())
    torch.testing.assert_close(views[0], floats, atol=1e-5, rtol=0)  # p = 0
    torch.testing.assert_close(views[1], solarized, atol=1e-5, rtol=0)  # p = 1
    torch.testing.assert_close(views[2], solarized, atol=1e-5, rtol=0)  # last value repeats
    local = F.interpolate(floats, size=recipe.local_size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(views[3], local, atol=1e-5, rtol=0)  # local crops: never solarised

    blurring = dataclasses.replace(STILL, blur_p=(1.0, 0.0), local_crops=1, local_blur_p=1.0)
    blurred = identity_maker(blurring, 3)(images, seeded_generator(0, 0))
    assert blurred[0].var() < 0.7 * floats.var()
    torch.testing.assert_close(blurred[1], floats, atol=1e-5, rtol=0)
    assert blurred[2].var() < 0.9 * local.var()


def test_bad_batches_give_clear_errors() -> None:
    maker = ViewMaker(RECIPES["small-images"], mean=(0.5,), std=(0.25,))
    with pytest.raises(TypeError, match="uint8"):
        maker(torch.rand(2, 1, 28, 28), seeded_generator(0, 0))
    with pytest.raises(ValueError, match="channels"):
        maker(uint8_images(channels=3), seeded_generator(0, 0))
    with pytest.raises(ValueError, match="std"):
        ViewMaker(RECIPES["small-images"], mean=(0.5,), std=(0.0,))


# ---------------------------------------------------------------------------------------------
# evaluation view
# ---------------------------------------------------------------------------------------------
def test_eval_view_is_the_normalised_whole_image() -> None:
    images = uint8_images(channels=3)
    maker = ViewMaker(ViewRecipe(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))  # 28 px, as the images
    view = maker.eval_view(images)
    torch.testing.assert_close(view, (images.float() / 255 - 0.5) / 0.25)
    assert torch.equal(view, maker.eval_view(images))


def test_eval_view_resizes_to_the_global_size() -> None:
    images = uint8_images(channels=1, size=32)
    maker = identity_maker(ViewRecipe(), 1)  # global_size 28
    view = maker.eval_view(images)
    assert view.shape == (16, 1, 28, 28)
    expected = F.interpolate(
        images.float() / 255, size=(28, 28), mode="bilinear", align_corners=False, antialias=True
    )
    torch.testing.assert_close(view, expected)


def test_eval_view_reads_its_own_size_whatever_the_crops() -> None:
    images = uint8_images(channels=1, size=28)
    recipe = dataclasses.replace(RECIPES["small-images"], global_size=16)
    maker = ViewMaker(recipe, mean=(0.0,), std=(1.0,), eval_size=28)
    assert [view.shape[-1] for view in maker(images, seeded_generator(0, 0))] == [16, 16]
    torch.testing.assert_close(maker.eval_view(images), images.float() / 255)  # the whole image, unresized
    assert ViewMaker(recipe, mean=(0.0,), std=(1.0,)).eval_view(images).shape[-1] == 16  # default: the crop size
    with pytest.raises(ValueError, match="eval_size"):
        ViewMaker(recipe, mean=(0.0,), std=(1.0,), eval_size=0)


# ---------------------------------------------------------------------------------------------
# seeded generator
# ---------------------------------------------------------------------------------------------
def draw(generator: torch.Generator) -> torch.Tensor:
    return torch.rand(8, generator=generator)


def test_seeded_generator_is_a_pure_function_of_seed_step_and_stream() -> None:
    assert torch.equal(draw(seeded_generator(3, 100)), draw(seeded_generator(3, 100)))
    draws = [draw(seeded_generator(3, step)) for step in range(50)]
    assert len({tuple(d.tolist()) for d in draws}) == 50
    assert not torch.equal(draw(seeded_generator(3, 0)), draw(seeded_generator(4, 0)))
    # (seed, step) pairs that a naive seed + step mix would confuse stay distinct.
    assert not torch.equal(draw(seeded_generator(3, 4)), draw(seeded_generator(4, 3)))
    assert not torch.equal(draw(seeded_generator(3, 0, stream=1)), draw(seeded_generator(3, 0)))
    assert seeded_generator(0, 0, "cpu").device == torch.device("cpu")


def test_resumed_run_sees_the_same_views() -> None:
    # Views of step 7 are the same whether steps 0-6 were augmented in this process or not.
    maker = ViewMaker(RECIPES["small-images"], mean=(0.5,), std=(0.25,))
    images = uint8_images(channels=1)
    for step in range(7):
        maker(images, seeded_generator(0, step))
    continued = maker(images, seeded_generator(0, 7))
    resumed = ViewMaker(RECIPES["small-images"], mean=(0.5,), std=(0.25,))(images, seeded_generator(0, 7))
    assert all(torch.equal(a, b) for a, b in zip(continued, resumed))
