"""Image sources by name: the built-in sets and folders, loaded as the three splits a run needs.

A data *source* is named by a spec string (see :data:`SOURCES_HELP`); :func:`load_splits`
turns it into the three sets a run needs: images to pretrain on, and a labelled
train/test pair for the evaluation protocol (kNN, linear probe, few-shot).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from selfsup.data.base import DataError, ImageSet, convert_images
from selfsup.data.digits import load_digits
from selfsup.data.fashion_mnist import fashion_mnist_available, load_fashion_mnist
from selfsup.data.folder import DEFAULT_BACKGROUND, DEFAULT_MAX_PIXELS, check_decode_settings, load_folder, split_indices

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
                 skipped and reported. Defaults: 3 channels, 32x32 pixels.
                 (To use a folder named like a built-in set, write ./digits.)"""


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
    if spec in BUILTIN_SOURCES:
        load = BUILTIN_SOURCES[spec]
        train, test = (_converted(load(split), channels, size) for split in ("train", "test"))
        return train, train, test
    root = Path(spec)
    if not root.is_dir():
        problem = "is a file, not a folder" if root.exists() else "is not an existing folder"
        raise DataError(
            f"unknown data source {spec!r}: it is not one of the built-in sets "
            f"({', '.join(BUILTIN_SOURCES)}) and {problem}"
        )
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
