"""Packing an image source into WebDataset tar shards and their index (``selfsup shards``).

Why shards: a folder of millions of small files is slow to list and to read at random
on network file systems and object stores; a few large tar files read sequentially are
fast everywhere, and a streaming loader needs only the small ``index.json`` to plan its
epochs and the evaluation split (see :mod:`selfsup.data.shards` for the layout).

How: the source's items (a folder's image files, or a built-in set's rows, train then
test) are put in a random order drawn from ``seed`` (so that no shard holds one class
only and a bounded shuffle buffer suffices later), checked by decoding each once in
DataLoader worker processes, in order, and written shard by shard. Unreadable files are
skipped and listed in the index, as folder loading skips them.

Crash safety: a shard is written to ``NAME.partial``, flushed to disk and renamed; only
then is the index rewritten (atomically) to list it. Everything is a function of the
source, the settings and the seed (fixed tar header fields, files in packing order), so
an interrupted pack run again with the same settings continues after its last complete
shard and ends with exactly the shards an uninterrupted pack writes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import sys
import tarfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import webdataset
from PIL import Image, ImageOps
from tqdm import tqdm

from selfsup.config import ConfigError
from selfsup.data.base import DataError
from selfsup.data.folder import (
    DEFAULT_BACKGROUND,
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    check_decode_settings,
    decode_image_with_warnings,
    describe_warnings,
    scan_folder,
    split_indices,
)
from selfsup.data.images import BUILTIN_SOURCES
from selfsup.data.shards import INDEX_FILE, ShardEntry, ShardIndex, load_index, shard_name
from selfsup.files import write_atomic

__all__ = ["DEFAULT_MAX_COUNT", "PARTIAL_SUFFIX", "format_byte_size", "pack_shards", "parse_byte_size"]

#: Samples per shard when neither a count nor a size limit is given.
DEFAULT_MAX_COUNT = 10_000
#: A shard being written is NAME.partial until it is complete.
PARTIAL_SUFFIX = ".partial"
#: Items per DataLoader batch: bounds what travels from a worker at once.
_BATCH_SIZE = 64
#: Items are checked by decoding them this small: cheap, and it reads every pixel.
_CHECK_SIZE = 8
_CHECK_CHANNELS = 3
_KEY_DIGITS = 9
_JPEG_QUALITY = 95
#: Fixed tar header fields, so that the same items always give the same bytes.
_TAR_MTIME = 0
_TAR_OWNER = "selfsup"
_TAR_BLOCK = tarfile.BLOCKSIZE
_TAR_RECORD = tarfile.RECORDSIZE
#: How many skip reasons a "nothing could be read" error quotes.
_REASONS_QUOTED = 5
#: Files a killed pack may leave behind (removed when it runs again): shards written but
#: not yet in the index, partial shards, write_atomic's temporary index.
_LEFTOVER = re.compile(r"shard-\d{6,}\.tar(\.partial)?|\.index\.json\..*\.tmp")
_BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_byte_size(text: str) -> int:
    """A size in bytes from ``1GB``, ``500MB``, ``64KB``, ``1.5GiB`` or plain bytes.

    KB, MB, GB and TB are powers of 1000; KiB, MiB, GiB and TiB powers of 1024; case and
    a space before the unit do not matter.

    Raises:
        ConfigError: for anything else, or a size below one byte.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _BYTE_UNITS:
        raise ConfigError(f"{text!r} is not a size; use e.g. 1GB, 500MB, 64KB, 1GiB or a number of bytes")
    size = int(float(match.group(1)) * _BYTE_UNITS[unit])
    if size < 1:
        raise ConfigError(f"{text!r} is less than one byte")
    return size


def format_byte_size(size: int) -> str:
    """``size`` bytes for people: ``"812 B"``, ``"64.0 KB"``, ``"1.23 GB"`` (powers of 1000)."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            value = size / scale
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}"
    return f"{size} B"


# --------------------------------------------------------------------------- sources


class _Item(NamedTuple):
    """One item of a source, before it is read."""

    path: str  # the name KEY.json and the index give it: relative to the folder, or "digits:train/12"
    label: int  # class index, -1 unknown
    split: str  # "train" or "test" (the evaluation split)
    file: str | None  # a folder's file; None for a built-in set's row
    row: int  # the row of a built-in set's split


@dataclass
class _Source:
    """A source as packing reads it: its items in source order and what the index says of it."""

    name: str
    items: list[_Item]
    class_names: list[str]
    pretrain: str
    arrays: dict[str, np.ndarray]  # a built-in set's images per split, uint8 [N, C, H, W]

    def listing_sha256(self) -> str:
        """A digest of the items' names, labels and splits: the same listing, the same shards."""
        digest = hashlib.sha256()
        for item in self.items:
            digest.update(f"{item.path}\t{item.label}\t{item.split}\n".encode())
        return digest.hexdigest()


def _load_source(spec: str) -> _Source:
    """The items of a built-in set (both splits, train first) or of a folder (sorted files)."""
    if spec in BUILTIN_SOURCES:
        splits = {split: BUILTIN_SOURCES[spec](split) for split in ("train", "test")}
        items = [
            _Item(path=f"{spec}:{split}/{row}", label=int(label), split=split, file=None, row=row)
            for split, images in splits.items()
            for row, label in enumerate(images.labels.tolist())
        ]
        arrays = {split: images.images.numpy() for split, images in splits.items()}
        return _Source(name=spec, items=items, class_names=list(splits["train"].class_names), pretrain="train", arrays=arrays)
    root = Path(os.path.abspath(spec))
    if not root.is_dir():
        problem = "is a file, not a folder" if root.exists() else "is not an existing folder"
        raise DataError(
            f"unknown data source {spec!r}: it is not one of the built-in sets ({', '.join(BUILTIN_SOURCES)}) and {problem}"
        )
    files, label_names = scan_folder(root)
    class_names = sorted({name for name in label_names if name is not None})
    class_index = {name: index for index, name in enumerate(class_names)}
    # The folder loader's split: a hash of each file's relative path.
    _, test_rows = split_indices(files, root)
    test = set(test_rows.tolist())
    items = [
        _Item(
            path=file.relative_to(root).as_posix(),
            label=-1 if name is None else class_index[name],
            split="test" if number in test else "train",
            file=str(file),
            row=-1,
        )
        for number, (file, name) in enumerate(zip(files, label_names))
    ]
    return _Source(name=str(root), items=items, class_names=class_names, pretrain="all", arrays={})


# --------------------------------------------------------------------------- reading and checking


class _Prepared(NamedTuple):
    """An item read, checked and (with ``size``) re-encoded, ready to be written."""

    position: int  # in packing order
    item: _Item
    extension: str  # the image member's extension
    data: bytes  # the image file's bytes; b"" when unreadable
    error: str  # why it is skipped; "" when readable
    warnings: tuple[str, ...]  # Pillow's warnings while checking it


class _PackItems(torch.utils.data.Dataset):
    """The items from packing position ``start`` on, read and checked: a map-style
    dataset that never raises, for a DataLoader that keeps their order."""

    def __init__(self, source: _Source, order: np.ndarray, start: int, size: int | None, background: str, max_pixels: int) -> None:
        self.source = source
        self.order = order
        self.start = start
        self.size = size
        self.background = background
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.order) - self.start

    def __getitem__(self, index: int) -> _Prepared:
        position = self.start + index
        item = self.source.items[int(self.order[position])]
        try:
            data, extension = self._read(item)
        except OSError as error:
            return _Prepared(position, item, "", b"", f"{type(error).__name__}: {error.strerror or error}", ())
        try:
            _, messages = decode_image_with_warnings(
                item.path, _CHECK_CHANNELS, _CHECK_SIZE, background=self.background, max_pixels=self.max_pixels, data=data
            )
        except ImageDecodeError as error:
            return _Prepared(position, item, extension, b"", error.reason, ())
        if self.size is not None:
            try:
                data, extension = _resized(data, self.size, self.max_pixels)
            except Exception as error:  # Pillow raises many types on input it could decode but not re-encode
                return _Prepared(position, item, extension, b"", f"cannot re-encode: {type(error).__name__}: {error}", ())
        return _Prepared(position, item, extension, data, "", messages)

    def _read(self, item: _Item) -> tuple[bytes, str]:
        if item.file is None:
            return _png_bytes(self.source.arrays[item.split][item.row]), "png"
        extension = Path(item.file).suffix.lower().lstrip(".")
        return Path(item.file).read_bytes(), "jpg" if extension == "jpeg" else extension


def _keep_items(batch: list[_Prepared]) -> list[_Prepared]:
    """DataLoader ``collate_fn``: the items as they are (bytes stay bytes)."""
    return batch


def _png_bytes(pixels: np.ndarray) -> bytes:
    """A uint8 ``[C, H, W]`` image (C 1 or 3) as a PNG file (lossless)."""
    image = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else np.ascontiguousarray(pixels.transpose(1, 2, 0)))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _resized(data: bytes, size: int, max_pixels: int) -> tuple[bytes, str]:
    """The image re-encoded with its shorter side ``size`` (aspect kept) and its extension.

    JPEG files stay JPEG (quality 95); the rest become PNG (lossless), keeping what a
    later decode reads: transparency (composited then onto the run's background) and
    16-bit values; 32-bit and float images become TIFF. EXIF orientation is applied, so
    the pixels are stored upright.
    """
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels  # the check before allowed this many
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # counted once, by the check's decode
            with Image.open(io.BytesIO(data)) as opened:
                jpeg = opened.format == "JPEG"
                opened.draft(None, (size, size))  # JPEG: decode reduced, still at least size on each side
                image = ImageOps.exif_transpose(opened)
                image, sixteen_bit = _storable(image, jpeg)
                width, height = image.size
                target = (size, max(1, round(height * size / width))) if width <= height else (max(1, round(width * size / height)), size)
                image = image.resize(target, Image.Resampling.LANCZOS)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    buffer = io.BytesIO()
    if jpeg:
        image.save(buffer, "JPEG", quality=_JPEG_QUALITY)
        return buffer.getvalue(), "jpg"
    if sixteen_bit:
        image = Image.fromarray(np.clip(np.asarray(image), 0, 2**16 - 1).astype(np.uint16))
    elif image.mode in ("I", "F"):
        image.save(buffer, "TIFF")
        return buffer.getvalue(), "tif"
    image.save(buffer, "PNG")
    return buffer.getvalue(), "png"


def _storable(image: Image.Image, jpeg: bool) -> tuple[Image.Image, bool]:
    """``image`` in a mode that resizes smoothly and saves as JPEG (``jpeg``) or PNG, and
    whether it holds 16-bit values (resized as 32-bit ``I``, saved back as 16-bit PNG)."""
    mode = image.mode
    if jpeg:
        return (image if mode in ("L", "RGB") else image.convert("RGB")), False
    if mode.startswith("I;16"):
        return image.convert("I"), True
    if mode == "I":
        values = np.asarray(image)
        # Within 16 bits a decode reads it on the 0..65535 scale, as a 16-bit PNG.
        return image, values.size > 0 and int(values.max()) <= 2**16 - 1
    if mode == "F":
        return image, False
    if image.has_transparency_data:
        return (image if mode in ("LA", "RGBA") else image.convert("RGBA")), False
    if mode in ("L", "RGB"):
        return image, False
    return image.convert("L" if mode == "1" else "RGB"), False  # palettes, CMYK, YCbCr, ...


# --------------------------------------------------------------------------- writing


class _HashingFile:
    """A write-only file that passes bytes on to ``handle`` while hashing and counting them."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.written = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.written += len(data)
        return self.handle.write(data)


def _sample_members(prepared: _Prepared, class_names: Sequence[str], key: str) -> dict[str, bytes | str]:
    """The tar members of one sample as TarWriter takes them: KEY.<ext>, KEY.json, KEY.cls."""
    item = prepared.item
    meta = {"path": item.path, "label": class_names[item.label] if item.label >= 0 else None, "split": item.split}
    sample: dict[str, bytes | str] = {"__key__": key, prepared.extension: prepared.data, "json": json.dumps(meta, ensure_ascii=False).encode()}
    if item.label >= 0:
        sample["cls"] = str(item.label).encode()
    return sample


def _member_bytes(sample: dict[str, bytes | str]) -> int:
    """What the sample's members take in a tar: a header block each, data padded to blocks."""
    return sum(_TAR_BLOCK + math.ceil(len(value) / _TAR_BLOCK) * _TAR_BLOCK for name, value in sample.items() if name != "__key__")


def _tar_file_bytes(member_bytes: int) -> int:
    """The size of a tar holding ``member_bytes`` of members: two end blocks, padded to records."""
    return math.ceil((member_bytes + 2 * _TAR_BLOCK) / _TAR_RECORD) * _TAR_RECORD


class _OpenShard:
    """A shard being written to ``NAME.partial``."""

    def __init__(self, out: Path, number: int) -> None:
        self.name = shard_name(number)
        self.path = out / self.name
        self.partial = out / (self.name + PARTIAL_SUFFIX)
        self.handle = open(self.partial, "wb")
        self.hashing = _HashingFile(self.handle)
        self.tar = webdataset.TarWriter(self.hashing, encoder=False, mtime=_TAR_MTIME, user=_TAR_OWNER, group=_TAR_OWNER)
        self.labels: list[int] = []
        self.test: list[int] = []
        self.member_bytes = 0

    @property
    def count(self) -> int:
        return len(self.labels)

    def bytes_with(self, sample: dict[str, bytes | str]) -> int:
        """The tar file's size if ``sample`` were added."""
        return _tar_file_bytes(self.member_bytes + _member_bytes(sample))

    def add(self, sample: dict[str, bytes | str], label: int, test: bool) -> None:
        if test:
            self.test.append(self.count)
        self.tar.write(sample)
        self.labels.append(label)
        self.member_bytes += _member_bytes(sample)

    def close(self) -> ShardEntry:
        """Finish the tar, flush it to disk and give it its final name."""
        self.tar.close()
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.partial, self.path)
        _fsync_directory(self.path.parent)
        return ShardEntry(name=self.name, count=self.count, bytes=self.hashing.written, sha256=self.hashing.digest.hexdigest(),
                          labels=self.labels, test=self.test)

    def abandon(self) -> None:
        """Stop writing and remove the partial file (the next pack writes this shard again)."""
        self.handle.close()
        self.partial.unlink(missing_ok=True)


def _fsync_directory(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# --------------------------------------------------------------------------- packing


def pack_shards(
    source: str,
    out: Path,
    *,
    max_count: int | None = None,
    max_size: int | None = None,
    size: int | None = None,
    workers: int = 2,
    background: str = DEFAULT_BACKGROUND,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Pack an image source into tar shards and ``index.json`` under ``out``.

    ``source`` is a built-in set (``fashion-mnist``, ``digits``: both splits, the test
    rows marked for evaluation, pretraining on the train rows) or a folder (every image
    file, labelled by its first-level subfolder, 20% marked test by the hash of its path
    as the folder loader does, pretraining on all). Each sample stores the original file
    (``size=None``) or the image re-encoded with its shorter side ``size``. A shard
    closes at ``max_count`` samples or before its file would exceed ``max_size`` bytes
    (a sample larger than that gets a shard of its own); with neither,
    ``max_count=DEFAULT_MAX_COUNT``. ``workers`` processes read and check the items
    (0: this process); ``background`` and ``max_pixels`` are how they are decoded (see
    :func:`~selfsup.data.folder.decode_image_with_warnings`); ``seed`` draws the order.

    Run again after an interruption, it continues after the last complete shard; on a
    complete directory it does nothing. Progress and Pillow's warnings go to stderr
    when ``progress``.

    Returns:
        A summary: ``shards``, ``samples``, ``skipped``, ``bytes`` (of all shards),
        ``seconds``, ``resumed_from`` (complete shards found), ``already_complete``,
        ``warned`` (files that decoded with warnings in this call), ``index`` (its path),
        ``source``.

    Raises:
        ConfigError: a setting out of range (naming it).
        DataError: an unknown or empty source, an output that is a file or a folder
            holding other things, an existing index written with other settings, or
            a source none of whose items could be read.
    """
    started = time.monotonic()
    _check_settings(max_count, max_size, size, workers, seed)
    check_decode_settings(background, max_pixels)
    if max_count is None and max_size is None:
        max_count = DEFAULT_MAX_COUNT
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; shards are written to a folder (choose another output folder)")
    packing = _load_source(source)
    order = np.random.default_rng(seed).permutation(len(packing.items))
    wanted = ShardIndex(
        root=str(out), source=packing.name, size=size, class_names=packing.class_names, pretrain=packing.pretrain,
        order_seed=seed, packed=0, total=len(packing.items), max_count=max_count, max_size=max_size,
        max_pixels=max_pixels, listing_sha256=packing.listing_sha256(),
    )
    index = _resume_point(out, wanted)
    resumed_from = len(index.shards)
    if index.complete:
        return _summary(index, out, started, resumed_from, already_complete=True, warned=0)
    warned: list[tuple[str, str]] = []
    dataset = _PackItems(packing, order, index.packed, size, background, max_pixels)
    loader = torch.utils.data.DataLoader(dataset, batch_size=_BATCH_SIZE, shuffle=False, num_workers=workers, collate_fn=_keep_items)
    shard: _OpenShard | None = None
    skipped: list[tuple[str, str]] = []  # since the last complete shard
    bar = tqdm(total=index.total, initial=index.packed, unit="img", desc=f"packing {source}", dynamic_ncols=True,
               disable=None if progress else True)
    try:
        for batch in loader:
            for prepared in batch:
                bar.update(1)
                if prepared.error:
                    skipped.append((prepared.item.path, prepared.error))
                    continue
                warned.extend((prepared.item.path, message) for message in prepared.warnings)
                sample = _sample_members(prepared, packing.class_names, f"{prepared.position:0{_KEY_DIGITS}d}")
                if shard is not None and max_size is not None and shard.bytes_with(sample) > max_size:
                    index = _complete_shard(out, index, shard, skipped, packed=prepared.position)
                    shard, skipped = None, []
                if shard is None:
                    shard = _OpenShard(out, len(index.shards))
                shard.add(sample, prepared.item.label, prepared.item.split == "test")
                if max_count is not None and shard.count == max_count:
                    index = _complete_shard(out, index, shard, skipped, packed=prepared.position + 1)
                    shard, skipped = None, []
        if shard is not None:
            index = _complete_shard(out, index, shard, skipped, packed=index.total)
            shard = None
        elif not index.shards:
            raise _nothing_readable(packing.name, index.total, skipped)
        else:  # the last items were all unreadable: the index lists them and is complete
            index.skipped.extend(skipped)
            index.packed = index.total
            write_atomic(out / INDEX_FILE, index.to_json())
    except BaseException:
        if shard is not None:
            shard.abandon()
        raise
    finally:
        bar.close()
    if progress and warned:
        print(describe_warnings(warned), file=sys.stderr)
    return _summary(index, out, started, resumed_from, already_complete=False, warned=len({path for path, _ in warned}))


def _check_settings(max_count: int | None, max_size: int | None, size: int | None, workers: int, seed: int) -> None:
    for name, value, least in (("max_count", max_count, 1), ("max_size", max_size, 1), ("size", size, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise ConfigError(f"shards: {name} must be a whole number of at least {least}, got {value!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"shards: workers must be 0 (this process) or more, got {workers!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"shards: seed must be a whole number of at least 0, got {seed!r}")


def _resume_point(out: Path, wanted: ShardIndex) -> ShardIndex:
    """The index to continue from: ``out``'s own when it was packed with the same source
    and settings, else ``wanted`` for an empty or new ``out``; leftovers of a killed pack
    (files the index does not list) are removed."""
    if not out.exists():
        out.mkdir(parents=True)
        return wanted
    if not (out / INDEX_FILE).exists():
        others = sorted(entry.name for entry in out.iterdir() if not _LEFTOVER.fullmatch(entry.name))
        if others:
            raise DataError(f"{out} is not empty ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) and holds no "
                            f"{INDEX_FILE}; choose another output folder")
        _remove_leftovers(out, keep=set())
        return wanted
    existing = load_index(out)
    differences = [
        f"{name} {found!r} (now {asked!r})"
        for name, found, asked in (
            ("source", existing.source, wanted.source),
            ("size", existing.size, wanted.size),
            ("seed", existing.order_seed, wanted.order_seed),
            ("max_count", existing.max_count, wanted.max_count),
            ("max_size", existing.max_size, wanted.max_size),
            ("max_pixels", existing.max_pixels, wanted.max_pixels),
        )
        if found != asked
    ]
    if not differences and (existing.total, existing.listing_sha256) != (wanted.total, wanted.listing_sha256):
        differences.append(f"the source's files ({existing.total} items then, {wanted.total} now, or other names or labels)")
    if differences:
        raise DataError(f"{out / INDEX_FILE} was packed with other settings: {'; '.join(differences)}; "
                        "choose another output folder, or remove this one to pack again")
    for entry in existing.shards:
        path = out / entry.name
        if not path.is_file() or path.stat().st_size != entry.bytes:
            raise DataError(f"{out / INDEX_FILE} lists {entry.name} ({entry.bytes} bytes), but that file is "
                            f"{'missing' if not path.is_file() else f'{path.stat().st_size} bytes'}; remove {out} to pack again")
    _remove_leftovers(out, keep={entry.name for entry in existing.shards})
    existing.root = str(out)
    return existing


def _remove_leftovers(out: Path, keep: set[str]) -> None:
    for entry in out.iterdir():
        if _LEFTOVER.fullmatch(entry.name) and entry.name not in keep and entry.is_file():
            entry.unlink()


def _complete_shard(out: Path, index: ShardIndex, shard: _OpenShard, skipped: list[tuple[str, str]], packed: int) -> ShardIndex:
    """Close ``shard``, then list it in the index (rewritten atomically), covering items up to ``packed``."""
    index.shards.append(shard.close())
    index.skipped.extend(skipped)
    index.packed = packed
    write_atomic(out / INDEX_FILE, index.to_json())
    return index


def _nothing_readable(name: str, total: int, skipped: list[tuple[str, str]]) -> DataError:
    reasons = "; ".join(f"{path}: {reason}" for path, reason in skipped[:_REASONS_QUOTED])
    more = len(skipped) - _REASONS_QUOTED
    return DataError(f"none of the {total} images of {name} could be decoded ({reasons}{f'; and {more} more' if more > 0 else ''})")


def _summary(index: ShardIndex, out: Path, started: float, resumed_from: int, *, already_complete: bool, warned: int) -> dict:
    return {
        "source": index.source,
        "shards": len(index.shards),
        "samples": index.count,
        "skipped": len(index.skipped),
        "bytes": index.total_bytes,
        "seconds": round(time.monotonic() - started, 2),
        "resumed_from": resumed_from,
        "already_complete": already_complete,
        "warned": warned,
        "index": str(out / INDEX_FILE),
    }
