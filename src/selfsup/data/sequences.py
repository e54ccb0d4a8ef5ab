"""Frame sequences: moving sprites whose future is genuinely uncertain.

Each clip shows ``sprites`` images (Fashion-MNIST items, or upscaled digits when
Fashion-MNIST is not installed) moving on a black ``size`` x ``size`` canvas, in the
spirit of Moving MNIST (Srivastava, Mansimov and Salakhutdinov, ICML 2015), with one
change: at every frame each sprite takes, with probability ``change_p``, a new random
velocity. The past then does not determine the future, so a predictor without a latent
variable can only predict the blurred mean of the possible continuations; this is the
data set for latent-variable energy models (METHODS.md).

Motion, per sprite, with positions the top-left corner ``(row, column)`` of the sprite in
pixels and ``L = size - sprite_size`` the largest position that keeps it fully inside::

    p[t+1] = reflect(p[t] + v[t])      mirrored at 0 and L, so 0 <= p <= L always
    v[t+1] = -v[t] per bounced axis, or, with probability change_p, a new random velocity

New velocities have a uniform direction and a speed uniform in ``speed``. A sprite is
drawn at ``round(p)``; overlapping sprites combine with the pixel-wise maximum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from selfsup.data.base import DataError, ImageSet, InMemorySamples, convert_images
from selfsup.data.digits import load_digits
from selfsup.data.fashion_mnist import load_fashion_mnist
from selfsup.data.images import default_source

__all__ = [
    "SEQUENCE_SOURCES",
    "SPRITE_SIZE",
    "ClipSet",
    "load_sequences",
    "moving_sprites",
    "reversed_future",
    "shifted_future",
]

#: Side of a sprite in pixels: Fashion-MNIST's native 28; the 8x8 digits are upscaled to it.
SPRITE_SIZE = 28
#: Sets the sprites can be taken from (their train split).
_SPRITE_SOURCES = {"fashion-mnist": load_fashion_mnist, "digits": load_digits}
#: :func:`load_sequences` specs: the default picks the sprite source as
#: ``selfsup.data.default_source()`` does.
SEQUENCE_SOURCES = ["moving-sprites", *(f"moving-sprites:{name}" for name in _SPRITE_SOURCES)]


@dataclass
class ClipSet(InMemorySamples):
    """Clips of frames with their labels and the trajectories that generated them.

    Attributes:
        frames: uint8 tensor ``[N, T, 1, H, W]``; the first ``frames_in`` frames are the
            past (the input), the rest the future (what is predicted).
        labels: int64 ``[N]``: the class of the clip's first sprite.
        frames_in: number of past frames.
        name: where the clips came from, e.g. ``"moving-sprites:fashion-mnist:train"``.
        class_names: class index -> name (the sprite source's classes).
        positions: float32 ``[N, T, S, 2]``: top-left corner ``(row, column)`` of each of
            the ``S`` sprites at each frame, in pixels; drawn at ``round(positions)``.
        velocities: float32 ``[N, T, S, 2]``: ``(row, column)`` velocity in pixels per
            frame; frame ``t + 1`` is frame ``t`` moved by ``velocities[:, t]`` (then
            mirrored at the walls).
        sprite_indices: int64 ``[N, S]``: the row of each sprite in its source set.
        skipped: ``(file, reason)`` of inputs that could not be read (none for generated clips).
    """

    frames: Tensor
    labels: Tensor
    frames_in: int
    name: str
    class_names: list[str]
    positions: Tensor
    velocities: Tensor
    sprite_indices: Tensor
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.frames.dtype != torch.uint8 or self.frames.dim() != 5:
            raise ValueError(
                f"ClipSet {self.name!r}: frames must be a uint8 tensor [N, T, C, H, W], "
                f"got {self.frames.dtype} with shape {tuple(self.frames.shape)}"
            )
        count, length = self.frames.shape[:2]
        if not 0 < self.frames_in < length:
            raise ValueError(
                f"ClipSet {self.name!r}: frames_in must lie in 1..{length - 1} for clips of "
                f"{length} frames, got {self.frames_in}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (count,):
            raise ValueError(
                f"ClipSet {self.name!r}: labels must be an int64 tensor [{count}], got "
                f"{self.labels.dtype} with shape {tuple(self.labels.shape)}"
            )
        sprites = self.sprite_indices.shape[1] if self.sprite_indices.dim() == 2 else -1
        for field_name in ("positions", "velocities"):
            shape = tuple(getattr(self, field_name).shape)
            if shape != (count, length, sprites, 2):
                raise ValueError(
                    f"ClipSet {self.name!r}: {field_name} must have shape "
                    f"[{count}, {length}, S, 2] with S = sprite_indices.shape[1], got {shape}"
                )

    def __len__(self) -> int:
        return self.frames.shape[0]

    @property
    def samples(self) -> Tensor:
        """The rows the trainer draws batches from (what every modality's set exposes)."""
        return self.frames

    def describe_rows(self) -> str:
        _, length, channels, height, width = self.frames.shape
        return (
            f"clips of {self.frames_in} + {length - self.frames_in} frames "
            f"{(channels, height, width)}"
        )

    @property
    def frames_out(self) -> int:
        return self.frames.shape[1] - self.frames_in

    @property
    def past(self) -> Tensor:
        """The first ``frames_in`` frames ``[N, frames_in, 1, H, W]`` (a view)."""
        return self.frames[:, : self.frames_in]

    @property
    def future(self) -> Tensor:
        """The remaining frames ``[N, frames_out, 1, H, W]`` (a view)."""
        return self.frames[:, self.frames_in :]

    def subset(self, indices: Tensor, name: str) -> ClipSet:
        """The clips at ``indices`` (in that order), as a new set called ``name``."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return ClipSet(
            frames=self.frames.index_select(0, indices),
            labels=self.labels.index_select(0, indices),
            frames_in=self.frames_in,
            name=name,
            class_names=list(self.class_names),
            positions=self.positions.index_select(0, indices),
            velocities=self.velocities.index_select(0, indices),
            sprite_indices=self.sprite_indices.index_select(0, indices),
        )


def _sprite_set(source: str | None, split: str = "train") -> ImageSet:
    """The ``split`` ("train" or "test") of ``source`` (default: Fashion-MNIST when
    installed, else digits) at :data:`SPRITE_SIZE` pixels, one channel."""
    if source is None:
        source = default_source()
    if source not in _SPRITE_SOURCES:
        raise DataError(
            f"unknown sprite source {source!r}; choose one of {', '.join(_SPRITE_SOURCES)}"
        )
    images = _SPRITE_SOURCES[source](split)
    return ImageSet(
        images=convert_images(images.images, 1, SPRITE_SIZE),
        labels=images.labels,
        name=images.name,
        class_names=images.class_names,
    )


def _random_velocities(
    rng: np.random.Generator, shape: tuple[int, ...], speed: tuple[float, float]
) -> np.ndarray:
    """Velocities ``[*shape, 2]`` with a uniform direction and a speed uniform in ``speed``."""
    angle = rng.uniform(0.0, 2 * math.pi, size=shape)
    magnitude = rng.uniform(speed[0], speed[1], size=shape)
    return np.stack([magnitude * np.sin(angle), magnitude * np.cos(angle)], axis=-1)


def _reflect(position: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``position`` into ``[0, limit]`` by mirroring at both walls (as often as needed).

    Returns the folded position and, per element, whether the motion ends reversed (an
    odd number of reflections).
    """
    crossings = np.floor(position / limit)
    folded = np.mod(position, 2 * limit)
    folded = np.where(folded > limit, 2 * limit - folded, folded)
    return folded, np.mod(crossings, 2) == 1


def _render(
    sprite_images: Tensor, sprite_indices: Tensor, corners: Tensor, size: int
) -> Tensor:
    """Draw one frame per clip: ``[N, size, size]`` uint8, sprites pasted at ``corners``
    ``[N, S, 2]`` (integer top-left corners) and combined with the maximum."""
    count, sprites = sprite_indices.shape
    offsets = torch.arange(sprite_images.shape[-1])
    # Flat canvas indices of every sprite pixel: one scatter per sprite, not per pixel.
    rows = corners[:, :, 0, None, None] + offsets[:, None]
    columns = corners[:, :, 1, None, None] + offsets
    flat = (rows * size + columns).view(count, sprites, -1)
    canvas = torch.zeros(count, size * size, dtype=torch.uint8)
    for sprite in range(sprites):
        pixels = sprite_images[sprite_indices[:, sprite]].view(count, -1)
        canvas.scatter_reduce_(1, flat[:, sprite], pixels, reduce="amax")
    return canvas.view(count, size, size)


def moving_sprites(
    count: int,
    frames_in: int = 10,
    frames_out: int = 10,
    size: int = 48,
    sprites: int = 1,
    change_p: float = 0.1,
    speed: tuple[float, float] = (1.0, 3.0),
    seed: int = 0,
    source: str | ImageSet | None = None,
) -> ClipSet:
    """Generate ``count`` clips of ``frames_in + frames_out`` frames of moving sprites.

    Deterministic given its arguments: the same ``seed`` gives the same clips.

    Args:
        count: number of clips.
        frames_in, frames_out: past and future frames per clip (10 + 10, as Moving MNIST).
        size: canvas side in pixels; must exceed the sprite side (28), so sprites move.
        sprites: sprites per clip. The default 1 keeps the label unambiguous; on the
            48-pixel canvas two 28-pixel sprites overlap in most frames.
        change_p: probability per frame and sprite of a new random velocity.
        speed: ``(lowest, highest)`` speed of a new velocity, in pixels per frame.
        seed: seed of every random choice (sprites, starts, velocities, changes).
        source: where the sprites come from: ``"fashion-mnist"`` or ``"digits"`` (their
            train split, at 28x28), ``None`` for Fashion-MNIST when it is installed and
            the digits otherwise, or an :class:`ImageSet` of one-channel images, used as
            they are (any square size below ``size``).

    Raises:
        ValueError: for a count, frame count, sprite count, probability or speed out of
            range, or a canvas no larger than a sprite.
        DataError: for an unknown source name, or a source whose files are missing.
    """
    if count < 1 or frames_in < 1 or frames_out < 1 or sprites < 1:
        raise ValueError(
            "count, frames_in, frames_out and sprites must be at least 1, got "
            f"{count}, {frames_in}, {frames_out} and {sprites}"
        )
    if not 0.0 <= change_p <= 1.0:
        raise ValueError(f"change_p is a probability in [0, 1], got {change_p}")
    if not 0.0 <= speed[0] <= speed[1]:
        raise ValueError(f"speed must be (lowest, highest) with 0 <= lowest <= highest, got {speed}")
    sprite_set = source if isinstance(source, ImageSet) else _sprite_set(source)
    if sprite_set.channels != 1 or sprite_set.height != sprite_set.width:
        raise ValueError(
            f"sprites must be square one-channel images, {sprite_set.name!r} has shape "
            f"{tuple(sprite_set.images.shape[1:])}"
        )
    sprite_size = sprite_set.height
    if size <= sprite_size:
        raise ValueError(
            f"the canvas (size {size}) must be larger than a sprite ({sprite_size} pixels)"
        )
    limit = float(size - sprite_size)
    length = frames_in + frames_out

    rng = np.random.default_rng(seed)
    sprite_indices = rng.integers(0, len(sprite_set), size=(count, sprites))
    # Every random draw is made up front, so the clips do not depend on the loop below.
    start = rng.uniform(0.0, limit, size=(count, sprites, 2))
    first_velocity = _random_velocities(rng, (count, sprites), speed)
    changes = rng.random(size=(count, length - 1, sprites)) < change_p
    new_velocities = _random_velocities(rng, (count, length - 1, sprites), speed)

    positions = np.empty((count, length, sprites, 2))
    velocities = np.empty((count, length, sprites, 2))
    positions[:, 0], velocities[:, 0] = start, first_velocity
    for t in range(length - 1):
        moved, reversed_axes = _reflect(positions[:, t] + velocities[:, t], limit)
        positions[:, t + 1] = moved
        bounced = np.where(reversed_axes, -velocities[:, t], velocities[:, t])
        velocities[:, t + 1] = np.where(changes[:, t, :, None], new_velocities[:, t], bounced)

    positions_t = torch.from_numpy(positions).to(torch.float32)
    # Corners from the stored float32 positions, so frames and trajectories agree exactly.
    corners = positions_t.round().to(torch.int64)
    indices_t = torch.from_numpy(sprite_indices)
    images = sprite_set.images[:, 0]
    frames = torch.stack(
        [_render(images, indices_t, corners[:, t], size) for t in range(length)], dim=1
    )
    return ClipSet(
        frames=frames.unsqueeze(2),
        labels=sprite_set.labels[indices_t[:, 0]].clone(),
        frames_in=frames_in,
        name=f"moving-sprites:{sprite_set.name}",
        class_names=list(sprite_set.class_names),
        positions=positions_t,
        velocities=torch.from_numpy(velocities).to(torch.float32),
        sprite_indices=indices_t,
    )


def load_sequences(
    spec: str = "moving-sprites",
    count: int = 2000,
    seed: int = 0,
    frames_in: int = 10,
    frames_out: int = 10,
    size: int = 48,
    sprites: int = 1,
    change_p: float = 0.1,
    split: str = "train",
) -> ClipSet:
    """Load a sequence source by spec (see :data:`SEQUENCE_SOURCES`).

    ``"moving-sprites"`` draws sprites from Fashion-MNIST when it is installed and from
    scikit-learn's digits otherwise (the set's ``name`` says which);
    ``"moving-sprites:fashion-mnist"`` and ``"moving-sprites:digits"`` choose explicitly.
    ``split`` picks the sprite set's split ("train" or "test"): held-out clips show held-out
    sprites. The other arguments are :func:`moving_sprites`'s.

    Raises:
        DataError: for an unknown spec (listing the known ones) or missing sprite files.
    """
    if spec not in SEQUENCE_SOURCES:
        raise DataError(
            f"unknown sequence source {spec!r}; choose one of {', '.join(SEQUENCE_SOURCES)}"
        )
    return moving_sprites(
        count,
        frames_in=frames_in,
        frames_out=frames_out,
        size=size,
        sprites=sprites,
        change_p=change_p,
        seed=seed,
        source=_sprite_set(spec.partition(":")[2] or None, split),
    )


def reversed_future(clips: ClipSet) -> Tensor:
    """The future played backwards, ``[N, frames_out, 1, H, W]``: the same frames and
    sprites as the true continuation, but not continuing the past's motion (an
    incompatible continuation for the energy AUC)."""
    return clips.future.flip(1)


def shifted_future(clips: ClipSet, shift: int | tuple[int, int]) -> Tensor:
    """The future translated by ``shift`` pixels, ``[N, frames_out, 1, H, W]``.

    An int moves the frames right by that many pixels (left when negative); a pair is
    ``(down, right)``. Pixels moved in from outside the canvas are black (no
    wrap-around), so a sprite can leave the frame partly.
    """
    down, right = (0, shift) if isinstance(shift, int) else shift
    future = clips.future
    height, width = future.shape[-2:]
    shifted = torch.zeros_like(future)
    if abs(down) >= height or abs(right) >= width:
        return shifted
    source_rows = slice(max(0, -down), height - max(0, down))
    target_rows = slice(max(0, down), height - max(0, -down))
    source_columns = slice(max(0, -right), width - max(0, right))
    target_columns = slice(max(0, right), width - max(0, -right))
    shifted[..., target_rows, target_columns] = future[..., source_rows, source_columns]
    return shifted
