"""Images from a folder tree, decoded with Pillow in DataLoader workers.

Layout: every image file under ``root`` (recursively) is a sample; the name of its
first-level subfolder is its label (``root/cat/a.png`` -> ``"cat"``,
``root/cat/indoor/b.png`` -> ``"cat"``); files directly in ``root`` are unlabelled. This
is the ImageFolder convention, extended so that uncurated, unlabelled folders work too.

Bad files never stop a run: a file that cannot be decoded (empty, truncated, not an
image, an unsupported pixel mode, more pixels than ``max_pixels``) is skipped and reported
with the reason. Pillow's warnings (corrupt EXIF data, ...) never reach the warnings
machinery: a file that decodes despite them is kept and listed in ``warned``, for one
summary line (:func:`describe_warnings`).

Every image is converted to 8-bit grey or RGB (transparent pixels composited onto a
background colour), resized so that its shorter side is ``size`` and centre-cropped to
``size`` x ``size``. Large images are decoded reduced, so that one file costs about one
decoded frame of memory, not several (see :func:`decode_image_with_warnings`).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import ExifTags, Image, UnidentifiedImageError
from tqdm import tqdm

from selfsup.config import ConfigError
from selfsup.data.base import DataError, ImageSet

__all__ = [
    "DEFAULT_BACKGROUND",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "DecodedImage",
    "FolderBatch",
    "FolderFiles",
    "FolderImageSet",
    "ImageDecodeError",
    "SkipReason",
    "check_decode_settings",
    "collate_decoded",
    "decode_image",
    "decode_image_with_warnings",
    "describe_warnings",
    "iter_folder_batches",
    "load_folder",
    "parse_background",
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
#: The colour transparent pixels are composited onto (config ``data.background``).
DEFAULT_BACKGROUND = "white"
#: The largest image (width x height) decoded (config ``data.max_pixels``): Pillow's own
#: default ``Image.MAX_IMAGE_PIXELS``, about 0.25 GiB as 24-bit RGB.
DEFAULT_MAX_PIXELS = 89_478_485
_NAMED_COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0)}
#: Frames of at most this many pixels are decoded exactly as before large-image support
#: (the result is bit-identical); larger ones are reduced first (see _reduced).
_REDUCE_ABOVE_PIXELS = 2**22
#: A reduced frame keeps its shorter side at least this many times ``size``, so that the
#: final antialiased resize still sees every pixel (as Pillow's ``reducing_gap=2``).
_REDUCE_MARGIN = 2
#: Modes Image.reduce averages meaningfully (not palette indices, not 1-bit or 16-bit).
_REDUCIBLE_MODES = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"})
#: EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: Pillow's pixel limit and the warnings filters are process-wide state that a decode
#: changes for its duration; decodes in one process take turns (see decode_image_with_warnings).
_DECODE_LOCK = threading.Lock()


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
    progress = tqdm(unit="file", desc=f"scanning {root.name or root}", dynamic_ncols=True, disable=None, leave=False)
    for folder, subfolders, files in os.walk(root, followlinks=True):
        progress.update(len(files))
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
    progress.close()
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


class DecodedImage(NamedTuple):
    """A decoded image and the warnings Pillow gave while decoding it."""

    image: torch.Tensor  # uint8 [C, S, S]
    warnings: tuple[str, ...]  # each warning's message, in the order given


def decode_image(
    path: str | Path,
    channels: int,
    size: int,
    *,
    background: str = DEFAULT_BACKGROUND,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Decode one image file to a uint8 tensor ``[channels, size, size]``.

    :func:`decode_image_with_warnings` without the warnings (which are never raised).
    """
    return decode_image_with_warnings(path, channels, size, background=background, max_pixels=max_pixels).image


def decode_image_with_warnings(
    path: str | Path,
    channels: int,
    size: int,
    *,
    background: str = DEFAULT_BACKGROUND,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    data: bytes | None = None,
) -> DecodedImage:
    """Decode one image file to a uint8 tensor ``[channels, size, size]`` and its warnings.

    Pixel modes: images with transparency (alpha in RGBA or LA, a palette with
    transparent entries, an RGB or L image with a transparent colour) are composited onto
    ``background`` (``'white'``, ``'black'`` or ``'#rrggbb'``, see
    :func:`parse_background`); 16-bit integer images (``I;16*``) are rescaled
    from 0..65535 to 0..255; 32-bit integer images (``I``) likewise from 0..65535 when
    their values fit in 16 bits (Pillow's mode for 16-bit data from several formats),
    else from 0..2**31-1, with negative values clipped to 0; float images (``F``) are
    taken as 0..1 when their values lie within it, as 0..255 when they lie within that,
    else min-max normalised (16/32-bit and float images ignore a transparent colour);
    palette, CMYK, YCbCr, 1-bit and the rest go through Pillow's conversion to RGB. The
    result is grey (``channels=1``) or RGB (``channels=3``). EXIF orientation is applied,
    multi-frame files give their first frame, and the shorter side is resized (bilinear,
    antialiased) to ``size`` and centre-cropped.

    Size: a file of more than ``max_pixels`` pixels (width x height, as its header
    says) is refused before any pixel is decoded. A large one is decoded reduced: JPEGs
    at 1/2, 1/4 or 1/8 scale (``Image.draft``, still at least ``size`` on each side);
    any frame of more than 2**22 pixels is then shrunk by an integer factor
    (``Image.reduce``, a box filter over the centred square, keeping its side at least
    2 x ``size``) before any conversion, so that memory stays near one decoded frame
    (two for frames with transparency, averaged premultiplied). The result of a reduced
    decode can differ from a whole one by a few levels at sharp edges; frames of at most
    2**22 pixels decode exactly as before reduced decoding existed.

    ``data``: the file's bytes, already read (a tar shard's member); ``path`` then only
    names it in messages.

    Warnings: Pillow's warnings during the decode (corrupt EXIF data, ...) are recorded,
    not raised, and returned with the image; a file that fails gives no warnings, its
    error says why.

    Raises:
        ValueError: ``channels`` not 1 or 3, or ``size`` < 1 (a caller's mistake).
        ConfigError: (a ``ValueError``) ``background`` not a colour, or ``max_pixels`` < 1,
            naming ``data.background`` / ``data.max_pixels``.
        ImageDecodeError: (a :class:`DataError`) for any file that cannot be decoded,
            naming the file and the reason.
    """
    mode = _check_channels_and_size(channels, size)
    colour = check_decode_settings(background, max_pixels)
    # Pillow's pixel limit (Image.MAX_IMAGE_PIXELS) and the warnings filters are globals
    # of the process, changed here for one decode and restored after it. DataLoader
    # workers are separate processes that decode one file at a time, so there the change
    # is seen by this decode alone; threads of one process take turns through the lock.
    with _DECODE_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning, even one seen before
        pillow_limit = Image.MAX_IMAGE_PIXELS
        try:
            pixels = _decode_pixels(path, mode, size, colour, max_pixels, data)
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit
    tensor = torch.from_numpy(pixels)
    tensor = tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1).contiguous()
    return DecodedImage(tensor, tuple(" ".join(str(warning.message).split()) for warning in caught))


def _decode_pixels(path: str | Path, mode: str, size: int, background: tuple[int, int, int], max_pixels: int,
                   data: bytes | None = None) -> np.ndarray:
    """The decode of decode_image_with_warnings, as a ``[size, size(, 3)]`` uint8 array."""
    try:
        # The header's size is checked here against max_pixels, naming it; Pillow's own
        # check at open would refuse above 2 x its limit and only warn below.
        Image.MAX_IMAGE_PIXELS = None
        with Image.open(path if data is None else io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    path,
                    f"image is {width} x {height} = {width * height:,} pixels, more than "
                    f"data.max_pixels={max_pixels:,} (a possible decompression bomb)",
                )
            # While decoding, Pillow checks tiles and frames against the same limit.
            Image.MAX_IMAGE_PIXELS = max_pixels
            # JPEG only: decode at a reduced scale that is still at least size x size.
            image.draft(mode, (size, size))
            image.load()  # reads all pixel data now, so truncated files fail here
            orientation = image.getexif().get(ExifTags.Base.Orientation)
            image = _reduced(image, size)
            if orientation in _ORIENTATION_TRANSPOSE:
                image = image.transpose(_ORIENTATION_TRANSPOSE[orientation])
            image = _to_mode(image, mode, background)
            width, height = image.size
            side = min(width, height)
            left, top = (width - side) / 2, (height - side) / 2
            image = image.resize(
                (size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side)
            )
            return np.array(image, dtype=np.uint8)  # a writable copy
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as error:
        raise ImageDecodeError(path, _unidentified_reason(path, data)) from error
    # Pillow's format plugins raise many exception types on malformed input (OSError,
    # ValueError, SyntaxError, struct.error, DecompressionBombError, ...); each means
    # "this file is unreadable".
    except Exception as error:
        raise ImageDecodeError(path, f"{type(error).__name__}: {error}") from error


def parse_background(background: str) -> tuple[int, int, int]:
    """The RGB colour of ``data.background``: ``'white'``, ``'black'`` or ``'#rrggbb'``.

    Raises:
        ConfigError: (a ``ValueError``) for anything else, naming ``data.background``.
    """
    text = background.strip().lower() if isinstance(background, str) else ""
    if text in _NAMED_COLOURS:
        return _NAMED_COLOURS[text]
    if re.fullmatch(r"#[0-9a-f]{6}", text):
        return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)
    raise ConfigError(
        f"data.background: {background!r} is not a colour; use 'white', 'black' or '#rrggbb' (e.g. '#808080')"
    )


def check_decode_settings(background: str, max_pixels: int) -> tuple[int, int, int]:
    """Check ``data.background`` and ``data.max_pixels``; the background's RGB colour.

    Raises:
        ConfigError: (a ``ValueError``) naming the key and the value not allowed.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ConfigError(f"data.max_pixels: must be a positive number of pixels, got {max_pixels!r}")
    return parse_background(background)


def _check_channels_and_size(channels: int, size: int) -> str:
    """The Pillow mode for ``channels``, after checking ``channels`` and ``size``."""
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if size < 1:
        raise ValueError(f"image size must be a positive number of pixels, got {size}")
    return _MODES[channels]


def _unidentified_reason(path: str | Path, data: bytes | None = None) -> str:
    try:
        empty = (os.path.getsize(path) if data is None else len(data)) == 0
    except OSError:
        empty = False
    return "empty file (0 bytes)" if empty else "not an image format Pillow can identify"


def _reduced(image: Image.Image, size: int) -> Image.Image:
    """The centred square of ``image`` shrunk by an integer factor when ``image`` is large
    (see decode_image_with_warnings).

    Frames of at most _REDUCE_ABOVE_PIXELS pixels, or too small to halve while keeping
    the shorter side at least _REDUCE_MARGIN x ``size``, are returned as they are. Modes
    that ``reduce`` cannot average are first brought to one it can, keeping what
    _to_mode reads: 16-bit to ``I`` (the same values), transparency to an alpha channel
    (``reduce`` averages RGBA premultiplied), palette and 1-bit to RGB.
    """
    width, height = image.size
    factor = min(width, height) // (_REDUCE_MARGIN * size)
    if width * height <= _REDUCE_ABOVE_PIXELS or factor < 2:
        return image
    if image.mode.startswith("I;16"):
        image = image.convert("I")
    elif image.mode not in _WIDE_MODES and image.has_transparency_data:
        if image.mode not in ("LA", "La", "RGBA", "RGBa"):  # a palette or a transparent colour
            image = image.convert("RGBA")
    elif image.mode not in _REDUCIBLE_MODES:  # palette, 1-bit, ...
        image = image.convert("RGB")
    # Only the centred square is kept in the end: reduce the largest centred square of
    # whole factor x factor blocks, so that no partial block at an edge stretches the picture.
    side = min(width, height) // factor * factor
    left, top = (width - side) // 2, (height - side) // 2
    return image.reduce(factor, box=(left, top, left + side, top + side))


def _to_mode(image: Image.Image, mode: str, background: tuple[int, int, int]) -> Image.Image:
    """Convert a loaded image of any Pillow mode to 8-bit ``mode`` ("L" or "RGB"),
    compositing transparent pixels onto ``background``."""
    if image.mode in _WIDE_MODES:
        image = Image.fromarray(_wide_to_uint8(np.asarray(image), image.mode), mode="L")
    elif image.has_transparency_data:
        # RGBA, LA, palettes with transparent entries (an index or bytes per entry),
        # RGB or L with a transparent colour: Pillow's RGBA conversion turns each into alpha.
        rgba = image.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (*background, 255))
        image = Image.alpha_composite(backdrop, rgba).convert("RGB")
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

    ``dataset[i]`` is ``(image, label, i, error, warnings)``: ``image`` uint8
    ``[C, S, S]``, ``label`` the class index (``-1`` for files directly in the root),
    ``error`` ``""`` and ``warnings`` one ``(path, message)`` pair per warning Pillow
    gave while decoding (usually ``()``). For a file that cannot be decoded, ``image``
    is an empty uint8 tensor ``[0, C, S, S]`` (a batch of no images), ``error`` a
    :class:`SkipReason` saying why and ``warnings`` ``()``. Use :func:`collate_decoded` as the DataLoader's
    ``collate_fn``. ``background`` and ``max_pixels`` are decode_image's (checked here,
    before any worker starts: :class:`ConfigError`).

    Attributes:
        root: the folder.
        paths: the files, sorted by path relative to ``root`` (see :func:`scan_folder`).
        labels: the class index of each file, ``-1`` when it has none.
        class_names: the sorted first-level subfolder names holding images.
    """

    def __init__(
        self,
        root: str | Path,
        channels: int = 3,
        size: int = 32,
        *,
        background: str = DEFAULT_BACKGROUND,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        _check_channels_and_size(channels, size)
        check_decode_settings(background, max_pixels)
        self.root = Path(root)
        self.channels = channels
        self.size = size
        self.background = background
        self.max_pixels = max_pixels
        files, label_names = scan_folder(self.root)
        self.paths = [str(path) for path in files]
        self.class_names = sorted({name for name in label_names if name is not None})
        class_index = {name: index for index, name in enumerate(self.class_names)}
        self.labels = [-1 if name is None else class_index[name] for name in label_names]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, str, tuple[tuple[str, str], ...]]:
        path = self.paths[index]
        try:
            image, messages = decode_image_with_warnings(
                path, self.channels, self.size, background=self.background, max_pixels=self.max_pixels
            )
        except ImageDecodeError as error:
            empty = torch.empty((0, self.channels, self.size, self.size), dtype=torch.uint8)
            return empty, self.labels[index], index, SkipReason(error.reason, path), ()
        return image, self.labels[index], index, "", tuple((path, message) for message in messages)


class FolderBatch(NamedTuple):
    """A collated batch of :class:`FolderFiles` items; the readable ones only."""

    images: torch.Tensor  # uint8 [b, C, S, S]
    labels: torch.Tensor  # int64 [b], -1 where unknown
    indices: torch.Tensor  # int64 [b], positions in FolderFiles.paths
    skipped: list[tuple[str, str]]  # (path, reason) of the unreadable files
    warned: list[tuple[str, str]]  # (path, warning message) of readable files that warned


def collate_decoded(batch: Sequence[tuple[torch.Tensor, int, int, str, tuple[tuple[str, str], ...]]]) -> FolderBatch:
    """DataLoader ``collate_fn`` for :class:`FolderFiles`: stack the readable items.

    Unreadable items are left out of the tensors and listed in ``skipped``; a batch in
    which nothing was readable has ``images`` of shape ``[0, C, S, S]``. The warnings of
    the readable items are gathered in ``warned``.
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
        warned=[entry for item in good for entry in item[4]],
    )


def iter_folder_batches(
    root: str | Path,
    channels: int,
    size: int,
    batch_size: int = 256,
    workers: int = 2,
    *,
    background: str = DEFAULT_BACKGROUND,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[FolderBatch]:
    """Decode a folder tree batch by batch, in file order, in ``workers`` processes.

    The folder is scanned when this is called (so a missing or empty folder fails
    here); decoding starts with the iteration. At most about
    ``(workers * 2 + 1) * batch_size`` decoded images are in memory at once, so this
    streams folders of any size. ``workers=0`` decodes in this process. ``background``
    and ``max_pixels`` are :func:`decode_image_with_warnings`'s; each batch lists its
    unreadable files in ``skipped`` and the warnings of its readable ones in ``warned``
    (for :func:`describe_warnings` once the folder is done).
    """
    dataset = FolderFiles(root, channels, size, background=background, max_pixels=max_pixels)
    return _iter_batches(dataset, batch_size, workers)


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


@dataclass
class FolderImageSet(ImageSet):
    """The :class:`ImageSet` of a whole folder, with the files that decoded with warnings.

    ``warned`` holds ``(path, message)`` for each warning Pillow gave while decoding a
    file that was kept (see :func:`describe_warnings`). Like ``skipped`` it describes the
    source; :meth:`subset` gives plain :class:`ImageSet` splits without it.
    """

    warned: list[tuple[str, str]] = field(default_factory=list)


def load_folder(
    root: str | Path,
    channels: int = 3,
    size: int = 32,
    workers: int = 2,
    *,
    background: str = DEFAULT_BACKGROUND,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FolderImageSet:
    """Decode every image under ``root`` into memory (see the module docstring).

    Decoding runs in ``workers`` processes, as in :func:`iter_folder_batches`, with
    :func:`decode_image_with_warnings`'s ``background`` and ``max_pixels``. Rows are
    in file order; unreadable files are left out and listed in ``skipped``
    with their reasons, and the warnings of readable ones in ``warned``. Labels come
    from first-level subfolders (``-1`` for files in ``root`` itself); when no image is
    in a subfolder the set is unlabelled (``class_names == []``). The set is named
    ``"folder:<absolute root>"``.

    Raises:
        ConfigError: ``background`` or ``max_pixels`` is not allowed (before any decode).
        DataError: when the folder is missing, holds no image files, or none of them
            can be decoded (quoting the first few reasons).
    """
    root = Path(os.path.abspath(root))
    dataset = FolderFiles(root, channels, size, background=background, max_pixels=max_pixels)
    images = torch.empty((len(dataset), channels, size, size), dtype=torch.uint8)
    readable = torch.zeros(len(dataset), dtype=torch.bool)
    skipped: list[tuple[str, str]] = []
    warned: list[tuple[str, str]] = []
    with tqdm(total=len(dataset), unit="img", desc=f"decoding {root.name}", dynamic_ncols=True, disable=None) as progress:
        for batch in _iter_batches(dataset, _LOAD_BATCH_SIZE, workers):
            images[batch.indices] = batch.images
            readable[batch.indices] = True
            skipped.extend(batch.skipped)
            warned.extend(batch.warned)
            progress.update(len(batch.images) + len(batch.skipped))
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
    return FolderImageSet(
        images=images,
        labels=torch.tensor(dataset.labels, dtype=torch.int64)[rows],
        name=f"folder:{root}",
        class_names=list(dataset.class_names),
        skipped=skipped,
        paths=[dataset.paths[i] for i in rows.tolist()],
        warned=warned,
    )


def describe_warnings(warned: Sequence[tuple[str, str]]) -> str:
    """One line counting the files that decoded with warnings, by kind of warning.

    E.g. ``"3 files decoded with warnings (Corrupt EXIF data: 2, Palette images with
    Transparency expressed in bytes should be converted to RGBA images: 1)"``: a kind is
    a message's first sentence with its numbers as ``N``, counted once per file, most
    frequent first. Returns ``""`` when ``warned`` is empty.
    """
    if not warned:
        return ""
    files_by_kind = Counter(kind for _, kind in {(path, _warning_kind(message)) for path, message in warned})
    files = len({path for path, _ in warned})
    kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(files_by_kind.items(), key=lambda entry: (-entry[1], entry[0])))
    return f"{files} file{'s' if files != 1 else ''} decoded with warnings ({kinds})"


def _warning_kind(message: str) -> str:
    """The part of a warning that is the same for every file: its first sentence, numbers as N."""
    first_sentence = message.split(". ")[0].strip().rstrip(".")
    return re.sub(r"\d+", "N", first_sentence) or "(empty warning)"
