"""Images from a folder tree, decoded with Pillow in DataLoader workers.

Layout: every image file under ``root`` (recursively) is a sample; the name of its
first-level subfolder is its label (``root/cat/a.png`` -> ``"cat"``,
``root/cat/indoor/b.png`` -> ``"cat"``); files directly in ``root`` are unlabelled. This
is the ImageFolder convention, extended so that uncurated, unlabelled folders work too.

Bad files never stop a run: a file that cannot be decoded (empty, truncated, not an
image, an unsupported pixel mode) is skipped and reported with the reason.

Every image is converted to 8-bit grey or RGB, resized so that its shorter side is
``size`` and centre-cropped to ``size`` x ``size``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from selfsup.data.base import DataError, ImageSet

__all__ = [
    "IMAGE_EXTENSIONS",
    "FolderBatch",
    "FolderFiles",
    "ImageDecodeError",
    "SkipReason",
    "collate_decoded",
    "decode_image",
    "iter_folder_batches",
    "load_folder",
    "scan_folder",
    "split_indices",
]

#: File-name suffixes (compared lower-case) that are treated as images.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
_MODES = {1: "L", 3: "RGB"}
#: 16/32-bit integer and float modes, rescaled to 8 bits by _wide_to_uint8.
_WIDE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
#: Batch size load_folder decodes with (it only bounds the transfer from the workers).
_LOAD_BATCH_SIZE = 256
#: How many skip reasons a "nothing could be read" error quotes.
_REASONS_QUOTED = 5


# --------------------------------------------------------------------------- scanning


def scan_folder(root: str | Path) -> tuple[list[Path], list[str | None]]:
    """List the image files under ``root`` and the label name of each.

    The walk is recursive and follows symbolic links, visiting each real folder once
    (under the first of its names in sorted order), so link cycles are harmless; hidden
    files and folders (name starting with ``.``) are ignored. Files are sorted by
    their path relative to ``root``. The label name of a file is its first-level
    subfolder, ``None`` for files directly in ``root``.

    Raises:
        DataError: when ``root`` is not a folder or holds no file with one of the
            :data:`IMAGE_EXTENSIONS`.
    """
    root = Path(root)
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"image folder {root} {problem}")
    relative_paths = []
    visited = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:  # a symbolic link back up the tree
            subfolders.clear()
            continue
        visited.add(real)
        # Sorted, so that which name reaches a linked folder first is deterministic.
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        relative_folder = Path(folder).relative_to(root)
        relative_paths.extend(
            relative_folder / name
            for name in files
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS
        )
    if not relative_paths:
        raise DataError(
            f"no image files found under {root}; recognised extensions are "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))} (any letter case)"
        )
    relative_paths.sort(key=lambda path: path.as_posix())
    label_names = [path.parts[0] if len(path.parts) > 1 else None for path in relative_paths]
    return [root / path for path in relative_paths], label_names


def split_indices(
    paths: Sequence[str | Path], root: str | Path, test_fraction: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split files into train and test by a stable hash of their path relative to ``root``.

    A file goes to the test split when the SHA-1 of its relative path (``/``-separated)
    read as a fraction in [0, 1) is below ``test_fraction``. The decision depends on
    that file alone, so adding or removing files never moves the others between splits,
    and the split is the same on every machine and Python run. Class balance is not
    enforced; with few files the test share can differ noticeably from
    ``test_fraction``, and a tiny folder can leave one side empty.

    Returns:
        ``(train_indices, test_indices)``: int64 tensors of positions in ``paths``,
        ascending.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    fractions = [_hash_fraction(Path(os.path.relpath(path, root)).as_posix()) for path in paths]
    mask = torch.tensor([fraction < test_fraction for fraction in fractions], dtype=torch.bool)
    return torch.nonzero(~mask).flatten(), torch.nonzero(mask).flatten()


def _hash_fraction(text: str) -> float:
    """A fraction in [0, 1) determined by ``text`` alone (first 8 bytes of its SHA-1)."""
    digest = hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# --------------------------------------------------------------------------- decoding


class ImageDecodeError(DataError):
    """A file that could not be decoded as an image; ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot decode image {path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):
        return ImageDecodeError, (self.path, self.reason)


def decode_image(path: str | Path, channels: int, size: int) -> torch.Tensor:
    """Decode one image file to a uint8 tensor ``[channels, size, size]``.

    Pixel modes: palette images (with or without transparency) are expanded; images
    with alpha are composited over black; 16-bit integer images (``I;16*``) are rescaled
    from 0..65535 to 0..255; 32-bit integer images (``I``) likewise from 0..65535 when
    their values fit in 16 bits (Pillow's mode for 16-bit data from several formats),
    else from 0..2**31-1, with negative values clipped to 0; float images (``F``) are
    taken as 0..1 when their values lie within it, as 0..255 when they lie within that,
    else min-max normalised; CMYK, YCbCr, 1-bit and the rest go through Pillow's
    conversion to RGB. The result is grey (``channels=1``) or RGB (``channels=3``).
    EXIF orientation is applied, multi-frame files give their first frame, and the
    shorter side is resized (bilinear, antialiased) to ``size`` and centre-cropped.

    Raises:
        ValueError: ``channels`` not 1 or 3, or ``size`` < 1 (a caller's mistake).
        ImageDecodeError: (a :class:`DataError`) for any file that cannot be decoded,
            naming the file and the reason.
    """
    mode = _check_channels_and_size(channels, size)
    try:
        with Image.open(path) as image:
            # JPEG only: decode at a reduced scale that is still at least size x size.
            image.draft(mode, (size, size))
            image.load()  # reads all pixel data now, so truncated files fail here
            ImageOps.exif_transpose(image, in_place=True)
            image = _to_mode(image, mode)
            width, height = image.size
            side = min(width, height)
            left, top = (width - side) / 2, (height - side) / 2
            image = image.resize(
                (size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side)
            )
            pixels = np.array(image, dtype=np.uint8)  # a writable copy
    except UnidentifiedImageError as error:
        raise ImageDecodeError(path, _unidentified_reason(path)) from error
    # Pillow's format plugins raise many exception types on malformed input (OSError,
    # ValueError, SyntaxError, struct.error, ...); each means "this file is unreadable".
    except Exception as error:
        raise ImageDecodeError(path, f"{type(error).__name__}: {error}") from error
    tensor = torch.from_numpy(pixels)
    return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1).contiguous()


def _check_channels_and_size(channels: int, size: int) -> str:
    """The Pillow mode for ``channels``, after checking ``channels`` and ``size``."""
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if size < 1:
        raise ValueError(f"image size must be a positive number of pixels, got {size}")
    return _MODES[channels]


def _unidentified_reason(path: str | Path) -> str:
    try:
        empty = os.path.getsize(path) == 0
    except OSError:
        empty = False
    return "empty file (0 bytes)" if empty else "not an image format Pillow can identify"


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert a loaded image of any Pillow mode to 8-bit ``mode`` ("L" or "RGB")."""
    if image.mode in _WIDE_MODES:
        image = Image.fromarray(_wide_to_uint8(np.asarray(image), image.mode), mode="L")
    elif image.has_transparency_data:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba).convert("RGB")
    elif image.mode not in ("L", "RGB"):
        # CMYK, YCbCr, 1, LAB, HSV, ...: Pillow knows how to reach RGB from each.
        image = image.convert("RGB")
    return image if image.mode == mode else image.convert(mode)


def _wide_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Rescale 16/32-bit integer or float pixel values to 0..255 (see decode_image)."""
    values = values.astype(np.float64)
    if mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(values.min()), float(values.max())
        if low >= 0.0 and high <= 1.0:
            scaled = values * 255.0
        elif low >= 0.0 and high <= 255.0:
            scaled = values
        elif high > low:
            scaled = (values - low) * (255.0 / (high - low))
        else:  # a constant image outside 0..255 has no scale to recover
            scaled = np.zeros_like(values)
    else:
        full_scale = 2**16 - 1 if mode != "I" or values.max() <= 2**16 - 1 else 2**31 - 1
        scaled = values * (255.0 / full_scale)
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


# --------------------------------------------------------------------------- datasets


class SkipReason(str):
    """Why a file was skipped: a plain ``str`` that also carries the file's ``path``.

    :class:`FolderFiles` returns it as the error of an unreadable item, so that
    :func:`collate_decoded` can report ``(path, reason)`` pairs from the items alone.
    """

    path: str

    def __new__(cls, reason: str, path: str) -> SkipReason:
        text = super().__new__(cls, reason)
        text.path = path
        return text

    def __reduce__(self):
        # Items travel from DataLoader workers by pickle; keep the path on the way.
        return SkipReason, (str(self), self.path)


class FolderFiles(torch.utils.data.Dataset):
    """The image files of a folder tree as a map-style dataset that never raises.

    ``dataset[i]`` is ``(image, label, i, error)``: ``image`` uint8 ``[C, S, S]``,
    ``label`` the class index (``-1`` for files directly in the root), and ``error``
    ``""``. For a file that cannot be decoded, ``image`` is an empty uint8 tensor
    ``[0, C, S, S]`` (a batch of no images) and ``error`` a :class:`SkipReason` saying
    why. Use :func:`collate_decoded` as the DataLoader's ``collate_fn``.

    Attributes:
        root: the folder.
        paths: the files, sorted by path relative to ``root`` (see :func:`scan_folder`).
        labels: the class index of each file, ``-1`` when it has none.
        class_names: the sorted first-level subfolder names holding images.
    """

    def __init__(self, root: str | Path, channels: int = 3, size: int = 32) -> None:
        _check_channels_and_size(channels, size)
        self.root = Path(root)
        self.channels = channels
        self.size = size
        files, label_names = scan_folder(self.root)
        self.paths = [str(path) for path in files]
        self.class_names = sorted({name for name in label_names if name is not None})
        class_index = {name: index for index, name in enumerate(self.class_names)}
        self.labels = [-1 if name is None else class_index[name] for name in label_names]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, str]:
        path = self.paths[index]
        try:
            image = decode_image(path, self.channels, self.size)
        except ImageDecodeError as error:
            empty = torch.empty((0, self.channels, self.size, self.size), dtype=torch.uint8)
            return empty, self.labels[index], index, SkipReason(error.reason, path)
        return image, self.labels[index], index, ""


class FolderBatch(NamedTuple):
    """A collated batch of :class:`FolderFiles` items; the readable ones only."""

    images: torch.Tensor  # uint8 [b, C, S, S]
    labels: torch.Tensor  # int64 [b], -1 where unknown
    indices: torch.Tensor  # int64 [b], positions in FolderFiles.paths
    skipped: list[tuple[str, str]]  # (path, reason) of the unreadable files


def collate_decoded(batch: Sequence[tuple[torch.Tensor, int, int, str]]) -> FolderBatch:
    """DataLoader ``collate_fn`` for :class:`FolderFiles`: stack the readable items.

    Unreadable items are left out of the tensors and listed in ``skipped``; a batch in
    which nothing was readable has ``images`` of shape ``[0, C, S, S]``.
    """
    good = [item for item in batch if not item[3]]
    skipped = [(item[3].path, str(item[3])) for item in batch if item[3]]
    if good:
        images = torch.stack([item[0] for item in good])
    else:
        images = batch[0][0]  # the [0, C, S, S] placeholder of an unreadable item
    return FolderBatch(
        images=images,
        labels=torch.tensor([item[1] for item in good], dtype=torch.int64),
        indices=torch.tensor([item[2] for item in good], dtype=torch.int64),
        skipped=skipped,
    )


def iter_folder_batches(
    root: str | Path, channels: int, size: int, batch_size: int = 256, workers: int = 2
) -> Iterator[FolderBatch]:
    """Decode a folder tree batch by batch, in file order, in ``workers`` processes.

    The folder is scanned when this is called (so a missing or empty folder fails
    here); decoding starts with the iteration. At most about
    ``(workers * 2 + 1) * batch_size`` decoded images are in memory at once, so this
    streams folders of any size. ``workers=0`` decodes in this process.
    """
    return _iter_batches(FolderFiles(root, channels, size), batch_size, workers)


def _iter_batches(dataset: FolderFiles, batch_size: int, workers: int) -> Iterator[FolderBatch]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_decoded,
    )
    return iter(loader)


def load_folder(
    root: str | Path, channels: int = 3, size: int = 32, workers: int = 2
) -> ImageSet:
    """Decode every image under ``root`` into memory (see the module docstring).

    Decoding runs in ``workers`` processes, as in :func:`iter_folder_batches`. Rows are
    in file order; unreadable files are left out and listed in ``skipped``
    with their reasons. Labels come from first-level subfolders (``-1`` for files in
    ``root`` itself); when no image is in a subfolder the set is unlabelled
    (``class_names == []``). The set is named ``"folder:<absolute root>"``.

    Raises:
        DataError: when the folder is missing, holds no image files, or none of them
            can be decoded (quoting the first few reasons).
    """
    root = Path(os.path.abspath(root))
    dataset = FolderFiles(root, channels, size)
    images = torch.empty((len(dataset), channels, size, size), dtype=torch.uint8)
    readable = torch.zeros(len(dataset), dtype=torch.bool)
    skipped: list[tuple[str, str]] = []
    for batch in _iter_batches(dataset, _LOAD_BATCH_SIZE, workers):
        images[batch.indices] = batch.images
        readable[batch.indices] = True
        skipped.extend(batch.skipped)
    if not readable.any():
        reasons = "; ".join(f"{path}: {reason}" for path, reason in skipped[:_REASONS_QUOTED])
        more = len(skipped) - _REASONS_QUOTED
        raise DataError(
            f"none of the {len(dataset)} image files under {root} could be decoded"
            f" ({reasons}{f'; and {more} more' if more > 0 else ''})"
        )
    rows = torch.nonzero(readable).flatten()
    if len(rows) < len(dataset):  # copy only when there are unreadable rows to drop
        images = images[rows]
    return ImageSet(
        images=images,
        labels=torch.tensor(dataset.labels, dtype=torch.int64)[rows],
        name=f"folder:{root}",
        class_names=list(dataset.class_names),
        skipped=skipped,
        paths=[dataset.paths[i] for i in rows.tolist()],
    )
