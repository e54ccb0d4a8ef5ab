"""What every data set offers the rest of the library (:class:`SampleSet`), the in-memory
image set every image source returns, and the error they raise.

An :class:`ImageSet` is a uint8 image tensor ``[N, C, H, W]`` with its labels, where it came
from, and which files could not be read. Sources decode once into this form; augmentation
and conversion to float happen later, batched, on the training device. Token sets
(:mod:`selfsup.data.tokens`) and clip sets (:mod:`selfsup.data.sequences`) keep their
samples in memory the same way (:class:`InMemorySamples`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import torch
import torch.nn.functional as F

__all__ = ["DataError", "ImageSet", "InMemorySamples", "SampleSet", "convert_images", "labelled_subset", "seed_mix"]


def seed_mix(*values: int) -> int:
    """One 64-bit seed from several integers (boost's hash_combine): the seeds of the data's
    order, in memory (train.batches) and streamed (data.stream), for (seed, epoch, ...)."""
    mixed = 0x9E3779B97F4A7C15
    for value in values:
        mixed = (mixed ^ (value + 0x9E3779B97F4A7C15 + (mixed << 6) + (mixed >> 2))) & 0xFFFFFFFFFFFFFFFF
    return mixed


class DataError(ValueError):
    """Bad or missing input data; the message names the file/folder and what to do."""


class SampleSet(Protocol):
    """A data set as the trainer, evaluation and the modalities read it, whatever its
    modality: ``len`` samples, their ``labels`` [N] int64 (-1 where unknown) naming
    ``class_names``, the inputs that could not be read (``skipped``: (path, reason)), and
    how batches are drawn (:meth:`gather`) and the set is split (:meth:`subset`)."""

    name: str
    labels: torch.Tensor
    class_names: list[str]
    skipped: list[tuple[str, str]]

    def __len__(self) -> int: ...

    @property
    def num_classes(self) -> int: ...

    def describe_rows(self) -> str:
        """What one sample is, for the log ("images (1, 28, 28)")."""
        ...

    def gather(self, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The samples at ``indices`` as one batch on ``device`` (uint8 images or clips,
        int64 token ids), in that order."""
        ...

    def subset(self, indices: torch.Tensor, name: str) -> SampleSet:
        """The samples at ``indices`` (in that order), as a new set called ``name``."""
        ...


Set = TypeVar("Set", bound=SampleSet)


def labelled_subset(split: Set) -> Set:
    """The samples of ``split`` that have a label (folders may mix in unlabelled files)."""
    keep = torch.nonzero(split.labels >= 0).flatten()
    return split if len(keep) == len(split) else split.subset(keep, split.name + ":labelled")


class InMemorySamples:
    """:class:`SampleSet`'s batches for sets whose samples are one tensor in memory
    (``samples`` [N, ...]) with a ``class_names`` list."""

    samples: torch.Tensor
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def gather(self, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The samples at ``indices`` on ``device``. On a GPU a set of fewer than 2^31
        elements is copied there once, so that batches need no host-to-device copies."""
        samples = self.samples
        if device.type == "cuda" and samples.numel() < 2**31:
            resident = self.__dict__.get("_resident")
            if resident is None or resident.device != device:
                resident = self.__dict__["_resident"] = samples.to(device)
            samples = resident
        return samples[indices.to(samples.device)].to(device, non_blocking=True)


@dataclass
class ImageSet(InMemorySamples):
    """A set of decoded images with their labels, held in memory on the CPU.

    Attributes:
        images: uint8 tensor ``[N, C, H, W]``, contiguous, on the CPU.
        labels: int64 tensor ``[N]``; ``-1`` where the label is unknown.
        name: where the images came from, e.g. ``"fashion-mnist:train"``,
            ``"digits:test"``, ``"folder:/path:train"``.
        class_names: class index -> class name; ``[]`` when the set is unlabelled.
        skipped: ``(path, reason)`` for every source file that could not be read.
        paths: the source file of each row (folders only), else ``None``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    class_names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    paths: list[str] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"ImageSet {self.name!r}: images must be a uint8 tensor [N, C, H, W], "
                f"got {self.images.dtype} with shape {tuple(self.images.shape)}"
            )
        if self.images.device.type != "cpu":
            raise ValueError(
                f"ImageSet {self.name!r}: images must be on the CPU, got {self.images.device}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"ImageSet {self.name!r}: labels must be an int64 tensor [{len(self.images)}], "
                f"got {self.labels.dtype} with shape {tuple(self.labels.shape)}"
            )
        if self.paths is not None and len(self.paths) != len(self.images):
            raise ValueError(
                f"ImageSet {self.name!r}: {len(self.paths)} paths for {len(self.images)} images"
            )
        if len(self.labels) and (
            int(self.labels.min()) < -1 or int(self.labels.max()) >= len(self.class_names)
        ):
            raise ValueError(
                f"ImageSet {self.name!r}: labels must lie in -1..{len(self.class_names) - 1} "
                f"({len(self.class_names)} class names), got "
                f"{int(self.labels.min())}..{int(self.labels.max())}"
            )
        self.images = self.images.contiguous()

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def samples(self) -> torch.Tensor:
        """The rows the trainer draws batches from (what every modality's set exposes)."""
        return self.images

    def describe_rows(self) -> str:
        return f"images {tuple(self.images.shape[1:])}"

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def height(self) -> int:
        return self.images.shape[2]

    @property
    def width(self) -> int:
        return self.images.shape[3]

    @property
    def has_labels(self) -> bool:
        """True when at least one image has a known label."""
        return bool((self.labels >= 0).any())

    def subset(self, indices: torch.Tensor, name: str) -> ImageSet:
        """The rows at ``indices`` (in that order), as a new set called ``name``.

        ``class_names`` and the list of skipped files are kept whole (they describe the
        source, not the rows); ``paths`` is subset along with the images.
        """
        indices = torch.as_tensor(indices, dtype=torch.int64)
        paths = None if self.paths is None else [self.paths[i] for i in indices.tolist()]
        return ImageSet(
            images=self.images.index_select(0, indices),
            labels=self.labels.index_select(0, indices),
            name=name,
            class_names=list(self.class_names),
            skipped=list(self.skipped),
            paths=paths,
        )


def convert_images(images: torch.Tensor, channels: int | None, size: int | None) -> torch.Tensor:
    """Convert uint8 images ``[N, C, H, W]`` to ``channels`` and ``size`` x ``size``.

    ``None`` keeps the native value. Grey -> RGB repeats the channel; RGB -> grey uses the
    ITU-R 601 luma weights (as Pillow's ``convert("L")``). Resizing follows the same rule
    as decoding a folder: the centred square of side ``min(H, W)`` is resized bilinearly
    with antialiasing to ``size`` x ``size``. Returns the input unchanged when nothing
    needs converting.
    """
    _, native_channels, height, width = images.shape
    channels = native_channels if channels is None else channels
    if channels not in (1, 3) or native_channels not in (1, 3):
        raise ValueError(
            f"can convert only between 1 and 3 channels, asked {native_channels} -> {channels}"
        )
    if size is not None and size < 1:
        raise ValueError(f"image size must be a positive number of pixels, got {size}")
    resize = size is not None and (height, width) != (size, size)
    if channels == native_channels and not resize:
        return images
    if channels == 1 and native_channels == 3:
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        images = (images.float() * luma).sum(dim=1, keepdim=True).round_().to(torch.uint8)
    if resize:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        images = images[:, :, top : top + side, left : left + side]
        # interpolate works on uint8 directly (5x faster than through float on CPU).
        images = F.interpolate(
            images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    if channels == 3 and native_channels == 1:
        images = images.expand(-1, 3, -1, -1)
    return images.contiguous()
