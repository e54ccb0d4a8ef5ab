"""Image sources by name: the built-in sets and folders, loaded as the three splits a run needs.

A data *source* is named by a spec string (see :data:`SOURCES_HELP`); :func:`load_splits`
turns it into the three sets a run needs: images to pretrain on, and a labelled
train/test pair for the evaluation protocol (kNN, linear probe, few-shot).
"""

from __future__ import annotations

import io
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfsup.data.base import DataError, ImageSet, convert_images
from selfsup.data.digits import load_digits
from selfsup.data.fashion_mnist import fashion_mnist_available, load_fashion_mnist
from selfsup.data.folder import (
    DEFAULT_BACKGROUND,
    DEFAULT_MAX_PIXELS,
    check_decode_settings,
    load_folder,
    scan_folder,
    split_indices,
)
from selfsup.data.shards import ShardIndex, is_shard_dir, iter_shard, load_index
from selfsup.data.stream import Decoding, FolderParts, ShardParts, StreamingImageSet

#: Built-in sets: spec -> loader of one split ("train" or "test").
BUILTIN_SOURCES: dict[str, Callable[[str], ImageSet]] = {
    "fashion-mnist": load_fashion_mnist,
    "digits": load_digits,
}
_FOLDER_CHANNELS = 3
_FOLDER_SIZE = 32

SOURCES_HELP = """\
Data sources:
  fashion-mnist  Fashion-MNIST, 60,000 train + 10,000 test greyscale 28x28 images in 10
                 classes, read from /usr/share/datasets/fashion-mnist
                 (install: apt-get install -y dataset-fashion-mnist).
  digits         scikit-learn's 1,797 8x8 handwritten digits, split 80/20 (stratified,
                 fixed seed); always available, for smoke runs and tests.
  PATH           a folder of images (png, jpg, jpeg, bmp, gif, tif, tiff, webp, ppm, pgm,
                 pbm), searched recursively; the first-level subfolder of a file is its
                 label. All images are pretrained on; a stable hash of each file's path
                 puts 20% of them in the evaluation test split. Unreadable files are
                 skipped and reported. Defaults: 1 channel for grey images, else 3; the median shorter side
                 of the files, at most the size the backbone is made for (32 px for
                 the CPU defaults, 224 px for ImageNet-stem backbones).
                 (To use a folder named like a built-in set, write ./digits.)
  DIR            a shard directory written by `selfsup shards` (found by its
                 index.json): WebDataset tar shards, read sequentially.
A folder or shard directory larger than data.cache_mb decoded is streamed: decoded in
worker processes batch by batch, never whole."""


def default_source() -> str:
    """``"fashion-mnist"`` when its files are installed, else ``"digits"``."""
    return "fashion-mnist" if fashion_mnist_available() else "digits"


def load_splits(
    spec: str,
    channels: int | None = None,
    size: int | None = None,
    workers: int = 2,
    *,
    background: str = DEFAULT_BACKGROUND,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[ImageSet, ImageSet, ImageSet]:
    """Load a data source as ``(pretrain, eval_train, eval_test)``.

    For a built-in set (``"fashion-mnist"``, ``"digits"``) this is
    ``(train, train, test)`` (the same object twice); ``channels``/``size`` of ``None``
    keep the native 1 channel and size, other values convert (see
    :func:`selfsup.data.base.convert_images`). Any other spec is a folder: it is decoded
    once (``channels`` default 3, ``size`` default 32, ``workers`` decoding processes)
    and split into ``(all files, hash-train files, hash-test files)`` with
    :func:`selfsup.data.folder.split_indices`; a tiny folder can leave a split empty.
    ``background`` (``data.background``) and ``max_pixels`` (``data.max_pixels``) are
    how a folder's files are decoded (see :func:`selfsup.data.folder.load_folder`; the
    first set is then a ``FolderImageSet`` whose ``warned`` lists Pillow's warnings);
    the built-in sets need neither, but a value not allowed fails for every source.

    Raises:
        ConfigError: ``background`` or ``max_pixels`` not allowed (naming the key).
        DataError: when the spec is neither a built-in name nor an existing folder
            (listing the names), or the source's files are missing or unreadable (for
            Fashion-MNIST with the command that installs it; falling back to another
            source is the caller's decision).
    """
    check_decode_settings(background, max_pixels)
    if is_shard_dir(spec):
        return _shards_in_memory(load_index(spec), 3 if channels is None else channels, _FOLDER_SIZE if size is None else size,
                                 workers, Decoding(1, 1, background, max_pixels))
    if spec in BUILTIN_SOURCES:
        load = BUILTIN_SOURCES[spec]
        train, test = (_converted(load(split), channels, size) for split in ("train", "test"))
        return train, train, test
    root = Path(spec)
    _check_folder(spec)
    everything = load_folder(
        root,
        channels=_FOLDER_CHANNELS if channels is None else channels,
        size=_FOLDER_SIZE if size is None else size,
        workers=workers,
        background=background,
        max_pixels=max_pixels,
    )
    train_rows, test_rows = split_indices(everything.paths, root)
    return (
        everything,
        everything.subset(train_rows, f"{everything.name}:train"),
        everything.subset(test_rows, f"{everything.name}:test"),
    )


def _check_folder(spec: str) -> None:
    root = Path(spec)
    if not root.is_dir():
        problem = "is a file, not a folder" if root.exists() else "is not an existing folder"
        raise DataError(
            f"unknown data source {spec!r}: it is not one of the built-in sets "
            f"({', '.join(BUILTIN_SOURCES)}) and {problem}"
        )


def _converted(images: ImageSet, channels: int | None, size: int | None) -> ImageSet:
    converted = convert_images(images.images, channels, size)
    if converted is images.images:
        return images
    return ImageSet(
        images=converted,
        labels=images.labels,
        name=images.name,
        class_names=images.class_names,
        skipped=images.skipped,
        paths=images.paths,
    )


def describe_skipped(skipped: Sequence[tuple[str, str]]) -> str:
    """One ``<path><TAB><reason>`` line per skipped file (for ``skipped_files.txt``).

    Line breaks inside a reason are replaced by spaces so that each file is one line.
    Returns ``""`` when nothing was skipped.
    """
    return "".join(f"{path}\t{' '.join(str(reason).split())}\n" for path, reason in skipped)


# --------------------------------------------------------------------------- large sources
#: How many files' headers a folder's typical size is read from.
_SIZE_PROBE_FILES = 64


@dataclass
class SourceInfo:
    """What a folder or shard directory holds, read before anything is decoded."""

    spec: str
    kind: str  # "folder" or "shards"
    count: int  # images (folders: files, unreadable ones included)
    median_side: int | None  # the median shorter side of a sample of the images (None: none readable)
    grey: bool = False  # every image of the sample is grey (one channel suffices)
    index: ShardIndex | None = None
    paths: list[str] | None = None
    labels: torch.Tensor | None = None
    class_names: list[str] | None = None

    def default_size(self, design: int) -> int:
        """Tiny images keep their size; larger ones get ``design`` (the backbone's)."""
        return design if self.median_side is None else min(self.median_side, design)

    @property
    def default_channels(self) -> int:
        """Grey images are stored with one channel, anything else as RGB."""
        return 1 if self.grey else 3

    def decoded_bytes(self, channels: int, size: int) -> int:
        return self.count * channels * size * size


def inspect_source(spec: str) -> SourceInfo | None:
    """A folder's or shard directory's size, typical image side and whether its images are
    grey (reading the headers of a few files, not their pixels); None for a built-in set."""
    if spec in BUILTIN_SOURCES and not os.path.isdir(spec):
        return None
    if is_shard_dir(spec):
        index = load_index(spec)
        side, grey = _probe(_first_shard_images(index))
        return SourceInfo(spec, "shards", index.count, index.size or side, grey, index=index, class_names=list(index.class_names))
    _check_folder(spec)
    paths, label_names = scan_folder(spec)
    class_names = sorted({name for name in label_names if name is not None})
    positions = {name: position for position, name in enumerate(class_names)}
    labels = torch.tensor([-1 if name is None else positions[name] for name in label_names], dtype=torch.int64)
    picks = np.random.default_rng(0).choice(len(paths), size=min(_SIZE_PROBE_FILES, len(paths)), replace=False)
    side, grey = _probe(str(paths[i]) for i in sorted(picks.tolist()))
    return SourceInfo(spec, "folder", len(paths), side, grey, paths=[str(path) for path in paths], labels=labels,
                      class_names=class_names)


def _first_shard_images(index: ShardIndex) -> list[io.BytesIO]:
    files = []
    for entry in index.shards[:1]:
        for sample in iter_shard(index.url(entry)):
            files.append(io.BytesIO(sample.data))
            if len(files) == _SIZE_PROBE_FILES:
                break
    return files


_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def _probe(files) -> tuple[int | None, bool]:
    """(the median shorter side, whether every image is grey) of the readable ``files``."""
    sides, grey = [], True
    for file in files:
        try:
            with Image.open(file) as image:  # the header only: no pixel is decoded
                sides.append(min(image.size))
                grey = grey and image.mode in _GREY_MODES
        except Exception:  # an unreadable file says nothing about the others
            continue
    return (int(statistics.median(sides)), grey) if sides else (None, False)


def open_stream(info: SourceInfo, channels: int, size: int, workers: int, *, background: str = DEFAULT_BACKGROUND,
                max_pixels: int = DEFAULT_MAX_PIXELS, buffer: int = 1000, pretrain_only: bool = True) -> StreamingImageSet:
    """The images of a folder or shard directory, streamed (see :mod:`selfsup.data.stream`).
    ``pretrain_only``: of a shard directory packed from a built-in set, its train split."""
    check_decode_settings(background, max_pixels)
    decoding = Decoding(channels, size, background, max_pixels)
    if info.kind == "shards":
        parts = ShardParts(info.index, pretrain_only)
        return StreamingImageSet(parts, f"shards:{os.path.abspath(info.spec)}", list(info.index.class_names), decoding, workers,
                                 buffer, skipped=list(info.index.skipped))
    return StreamingImageSet(FolderParts(info.paths, info.labels), f"folder:{os.path.abspath(info.spec)}", list(info.class_names),
                             decoding, workers, buffer, paths=info.paths)


def held_out_ids(info: SourceInfo) -> torch.Tensor:
    """Sample ids (all samples, index order) of the evaluation test split: a folder's by the
    hash of each path (as :func:`load_splits`), a shard directory's from its index."""
    if info.kind == "folder":
        return split_indices(info.paths, info.spec)[1]
    offsets = np.concatenate([[0], np.cumsum([entry.count for entry in info.index.shards])[:-1]])
    return torch.from_numpy(np.concatenate([offset + np.asarray(entry.test, dtype=np.int64)
                                            for offset, entry in zip(offsets, info.index.shards, strict=True)] or [np.zeros(0, np.int64)]))


def evaluation_splits(every: StreamingImageSet, info: SourceInfo, train_count: int, test_count: int) -> tuple[ImageSet, ImageSet]:
    """Labelled evaluation splits of a streamed source, decoded into memory: at most
    ``train_count`` and ``test_count`` labelled images, a fixed random choice (seed 0) so
    that runs on one source are evaluated on the same images. ``every`` holds all the
    source's samples (a built-in set's test split included)."""
    is_test = torch.zeros(len(every), dtype=torch.bool)
    is_test[held_out_ids(info)] = True
    labelled = every.labels >= 0
    generator = torch.Generator().manual_seed(0)
    splits = []
    for rows, count, split in ((labelled & ~is_test, train_count, "train"), (labelled & is_test, test_count, "test")):
        candidates = torch.nonzero(rows).flatten()
        chosen = candidates[torch.randperm(len(candidates), generator=generator)[:count]].sort().values
        splits.append(every.subset(chosen, f"{every.name}:{split}"))
    return splits[0], splits[1]


def _shards_in_memory(index: ShardIndex, channels: int, size: int, workers: int, decode: Decoding) -> tuple[ImageSet, ImageSet, ImageSet]:
    """A small shard directory decoded once into memory: (pretraining images, train, test)."""
    info = SourceInfo(index.root, "shards", index.count, index.size, index=index, class_names=list(index.class_names))
    every = open_stream(info, channels, size, workers, background=decode.background, max_pixels=decode.max_pixels,
                        pretrain_only=False)
    everything = every.subset(torch.arange(len(every)), every.name)
    # Subset keeps readable rows; a packed shard holds only images that decoded when packed.
    if len(everything) != len(every):
        raise DataError(f"{every.name}: {len(every) - len(everything)} packed image(s) no longer decode; pack the source again")
    is_test = torch.zeros(len(every), dtype=torch.bool)
    is_test[held_out_ids(info)] = True
    pretrain_rows = torch.nonzero(~is_test).flatten() if index.pretrain == "train" else torch.arange(len(every))
    labelled = everything.labels >= 0
    return (
        everything if index.pretrain == "all" else everything.subset(pretrain_rows, everything.name),
        everything.subset(torch.nonzero(labelled & ~is_test).flatten(), f"{everything.name}:train"),
        everything.subset(torch.nonzero(labelled & is_test).flatten(), f"{everything.name}:test"),
    )
