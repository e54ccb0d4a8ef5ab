"""Moving sprites: deterministic clips whose trajectories stay in frame, bounce and turn."""

import numpy as np
import pytest
import torch

import selfsup.data
import selfsup.data.images
from selfsup.data import DataError, ImageSet, default_source
from selfsup.data.sequences import (
    SPRITE_SIZE,
    load_sequences,
    moving_sprites,
    reversed_future,
    shifted_future,
)

SIDE, CANVAS = 6, 16  # small solid sprites on a small canvas: fast, and easy to check
LIMIT = CANVAS - SIDE


@pytest.fixture(scope="module")
def blocks():
    """Ten solid SIDE x SIDE squares of distinct brightness, in three classes."""
    values = torch.arange(1, 11, dtype=torch.uint8) * 25
    return ImageSet(
        images=values.view(10, 1, 1, 1).expand(10, 1, SIDE, SIDE).contiguous(),
        labels=torch.arange(10) % 3,
        name="blocks",
        class_names=["a", "b", "c"],
    )


@pytest.fixture(scope="module")
def clips():
    return load_sequences(count=6, seed=3, frames_in=4, frames_out=3, sprites=2)


def render_naive(sprite_images, clips):
    """Paste every sprite pixel by pixel at round(position), combining with max."""
    count, length, sprites, _ = clips.positions.shape
    size = clips.frames.shape[-1]
    frames = np.zeros((count, length, size, size), dtype=np.uint8)
    corners = np.rint(clips.positions.numpy()).astype(int)
    for n in range(count):
        for t in range(length):
            for s in range(sprites):
                image = sprite_images[clips.sprite_indices[n, s]].numpy()
                row, column = corners[n, t, s]
                for i in range(image.shape[0]):
                    for j in range(image.shape[1]):
                        pixel = frames[n, t, row + i, column + j]
                        frames[n, t, row + i, column + j] = max(pixel, image[i, j])
    return frames


def test_shapes_dtypes_and_name(clips):
    assert clips.frames.shape == (6, 7, 1, 48, 48) and clips.frames.dtype == torch.uint8
    assert clips.positions.shape == clips.velocities.shape == (6, 7, 2, 2)
    assert clips.positions.dtype == clips.velocities.dtype == torch.float32
    assert clips.labels.shape == (6,) and clips.labels.dtype == torch.int64
    assert clips.sprite_indices.shape == (6, 2)
    assert clips.name == f"moving-sprites:{default_source()}:train"
    assert clips.past.shape == (6, 4, 1, 48, 48) and clips.future.shape == (6, 3, 1, 48, 48)
    assert torch.equal(torch.cat([clips.past, clips.future], dim=1), clips.frames)
    assert clips.frames_out == 3 and len(clips) == 6 and clips.samples is clips.frames
    assert clips.describe_rows() == "clips of 4 + 3 frames (1, 48, 48)"


def test_frames_are_the_sprites_drawn_at_their_positions(clips):
    """The vectorised renderer against a pixel loop, on the real (overlapping) sprites."""
    source = selfsup.data.load_splits(default_source(), size=SPRITE_SIZE)[0]
    expected = render_naive(source.images[:, 0], clips)
    np.testing.assert_array_equal(clips.frames[:, :, 0].numpy(), expected)
    assert torch.equal(clips.labels, source.labels[clips.sprite_indices[:, 0]])
    assert clips.class_names == source.class_names


def test_same_seed_same_clips_other_seed_other_clips(blocks):
    first = moving_sprites(5, size=CANVAS, sprites=2, seed=7, source=blocks)
    again = moving_sprites(5, size=CANVAS, sprites=2, seed=7, source=blocks)
    other = moving_sprites(5, size=CANVAS, sprites=2, seed=8, source=blocks)
    for name in ("frames", "labels", "positions", "velocities", "sprite_indices"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert not torch.equal(first.positions, other.positions)
    assert not torch.equal(first.frames, other.frames)


def test_sprites_stay_fully_in_frame(blocks):
    # Speeds up to four canvas widths per frame still fold back inside.
    for speed in ((1.0, 3.0), (20.0, 40.0)):
        clips = moving_sprites(200, size=CANVAS, seed=1, speed=speed, source=blocks)
        assert clips.positions.min() >= 0 and clips.positions.max() <= LIMIT
        # One solid block per frame: all of its pixels are on the canvas, at round(p).
        brightness = blocks.images[clips.sprite_indices[:, 0], 0, 0, 0].long() * SIDE**2
        totals = clips.frames.long().sum(dim=(2, 3, 4))
        assert torch.equal(totals, brightness[:, None].expand_as(totals))
        lit_rows = (clips.frames[:, :, 0] > 0).any(dim=-1).float().argmax(dim=-1)
        assert torch.equal(lit_rows, clips.positions[..., 0, 0].round().long())


def test_velocity_changes_happen_at_change_p(blocks):
    for change_p in (0.0, 0.1, 0.3, 1.0):
        clips = moving_sprites(250, frames_in=10, frames_out=10, size=CANVAS, sprites=2,
                               change_p=change_p, seed=2, source=blocks)
        before, after = clips.velocities[:, :-1], clips.velocities[:, 1:]
        # A bounce only flips signs; any change of |v| is a new velocity.
        changed = ~torch.isclose(before.abs(), after.abs()).all(dim=-1)
        assert changed.float().mean().item() == pytest.approx(change_p, abs=0.015)
        speeds = clips.velocities.norm(dim=-1)
        assert speeds.min() >= 1.0 - 1e-5 and speeds.max() <= 3.0 + 1e-5


def test_bounces_reflect_position_and_velocity(blocks):
    clips = moving_sprites(100, size=CANVAS, change_p=0.0, seed=4, source=blocks)
    position, velocity = clips.positions[:, :-1], clips.velocities[:, :-1]
    unreflected = position + velocity
    low, high = unreflected < 0, unreflected > LIMIT
    inside = ~(low | high)
    assert low.any() and high.any()  # the test exercises both walls
    expected = torch.where(low, -unreflected, torch.where(high, 2 * LIMIT - unreflected, unreflected))
    torch.testing.assert_close(clips.positions[:, 1:], expected, rtol=0, atol=1e-4)
    assert torch.equal(clips.velocities[:, 1:][inside], velocity[inside])
    assert torch.equal(clips.velocities[:, 1:][~inside], -velocity[~inside])


def test_labels_are_the_first_sprites_class(blocks):
    clips = moving_sprites(30, size=CANVAS, sprites=3, seed=5, source=blocks)
    assert torch.equal(clips.labels, clips.sprite_indices[:, 0] % 3)
    assert clips.class_names == ["a", "b", "c"] and clips.name == "moving-sprites:blocks"
    part = clips.subset(torch.tensor([4, 0]), "part")
    assert torch.equal(part.frames, clips.frames[[4, 0]]) and torch.equal(part.labels, clips.labels[[4, 0]])
    assert torch.equal(part.positions, clips.positions[[4, 0]]) and part.frames_in == clips.frames_in


def test_digits_fallback_when_fashion_mnist_is_missing(monkeypatch):
    monkeypatch.setattr(selfsup.data.images, "fashion_mnist_available", lambda: False)
    clips = load_sequences(count=3, frames_in=2, frames_out=2)
    assert clips.name == "moving-sprites:digits:train"
    assert clips.class_names == [str(digit) for digit in range(10)]
    assert clips.frames.shape == (3, 4, 1, 48, 48)
    explicit = load_sequences("moving-sprites:digits", count=3, frames_in=2, frames_out=2)
    assert torch.equal(explicit.frames, clips.frames)


def test_reversed_and_shifted_futures(blocks):
    clips = moving_sprites(4, frames_in=3, frames_out=4, size=CANVAS, seed=6, source=blocks)
    future = clips.future
    assert torch.equal(reversed_future(clips), future[:, [3, 2, 1, 0]])
    right = shifted_future(clips, 2)
    assert torch.equal(right[..., 2:], future[..., :-2]) and not right[..., :2].any()
    up_left = shifted_future(clips, (-3, -1))
    assert torch.equal(up_left[..., :-3, :-1], future[..., 3:, 1:])
    assert not up_left[..., -3:, :].any() and not up_left[..., -1].any()
    assert torch.equal(shifted_future(clips, 0), future)
    assert not shifted_future(clips, (CANVAS, 0)).any()


def test_bad_arguments_are_rejected(blocks):
    with pytest.raises(ValueError, match="larger than a sprite"):
        moving_sprites(2, size=SIDE, source=blocks)
    with pytest.raises(ValueError, match="change_p"):
        moving_sprites(2, size=CANVAS, change_p=1.5, source=blocks)
    with pytest.raises(ValueError, match="frames_in"):
        moving_sprites(2, frames_in=0, size=CANVAS, source=blocks)
    with pytest.raises(ValueError, match="speed"):
        moving_sprites(2, size=CANVAS, speed=(3.0, 1.0), source=blocks)
    with pytest.raises(DataError, match="moving-sprites:digits"):
        load_sequences("bouncing-balls")
    with pytest.raises(DataError, match="sprite source"):
        moving_sprites(2, source="cifar")
