"""Reading image shards: WebDataset tar files and the JSON index that describes them.

A shard directory (written by :func:`selfsup.data.packing.pack_shards`, ``selfsup shards``)
holds tar files ``shard-000000.tar``, ``shard-000001.tar``, ... in the WebDataset layout,
and ``index.json``. One sample is three members sharing a key (its position in packing
order, nine digits): ``KEY.<ext>`` the image file's bytes (``png``, ``jpg``, ...),
``KEY.json`` ``{"path", "label", "split"}`` and, when labelled, ``KEY.cls`` the class index
as text. Any tar reader lists them; ``webdataset.WebDataset`` reads them as they are.

The index says, without opening a tar, what the shards hold: each shard's sample count,
size, SHA-256, the class index of every sample in tar order and the positions of the
samples in the evaluation test split, so that a streaming loader can plan epochs and
splits from one small file. It is plain JSON (nothing is unpickled), validated on load:
any problem is a :class:`~selfsup.data.base.DataError` naming the file and the key.

Shards are read sequentially, one member at a time, through webdataset's own opener
(``webdataset.gopen``), so that every URL scheme it knows works: local paths,
``pipe:COMMAND`` (e.g. ``pipe:aws s3 cp s3://bucket/shard-000000.tar -``), ``http(s)://``.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import webdataset
from webdataset.tariterators import group_by_keys, tar_file_iterator

from selfsup.data.base import DataError
from selfsup.data.folder import DEFAULT_BACKGROUND, DEFAULT_MAX_PIXELS, DecodedImage, decode_image_with_warnings

__all__ = [
    "FORMAT",
    "INDEX_FILE",
    "NAME_PLACEHOLDER",
    "PRETRAIN_SPLITS",
    "VERSION",
    "ShardEntry",
    "ShardIndex",
    "ShardSample",
    "decode_shard_sample",
    "is_shard_dir",
    "iter_shard",
    "load_index",
    "shard_name",
]

INDEX_FILE = "index.json"
FORMAT = "selfsup-shards"
VERSION = 1
#: What a run pretrains on: every sample (a folder), or the samples outside the test
#: split (a built-in set, whose test split is held out as the set's authors intended).
PRETRAIN_SPLITS = ("all", "train")
#: Members of a sample that are not its image.
_META_EXTENSIONS = frozenset({"json", "cls"})
_SHARD_NAME = re.compile(r"shard-\d{6,}\.tar")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Where an index read from a URL prefix containing this placeholder puts a file's name
#: (``pipe:aws s3 cp s3://bucket/shards/{name} -``); without it the name is appended after ``/``.
NAME_PLACEHOLDER = "{name}"


def shard_name(number: int) -> str:
    """The file name of shard ``number`` (``shard-000000.tar``)."""
    return f"shard-{number:06d}.tar"


@dataclass
class ShardEntry:
    """One complete shard as the index lists it."""

    name: str  # file name inside the shard directory, e.g. shard-000000.tar
    count: int  # samples in the tar
    bytes: int  # size of the tar file
    sha256: str  # hex digest of the tar file
    labels: list[int]  # class index per sample, in tar order; -1 unknown
    test: list[int]  # positions (in tar order) of the samples in the evaluation test split


@dataclass
class ShardIndex:
    """What ``index.json`` says about a shard directory (see the module docstring).

    ``packed`` counts the source's items, in packing order, that the complete shards
    cover (written or skipped as unreadable); the pack is complete when it reaches
    ``total``. ``max_count``, ``max_size``, ``max_pixels`` and ``listing_sha256`` (of the
    source's item names and labels) record how the shards were cut, so that an
    interrupted pack continues only with the same settings and the same source.
    """

    root: str  # the directory or URL prefix the index was read from
    source: str  # a built-in set's name, or the folder's absolute path
    size: int | None  # shorter side the images were resized to; None: the original files
    class_names: list[str]
    pretrain: str  # "all" or "train" (see PRETRAIN_SPLITS)
    order_seed: int  # seed of the packing order (a permutation of the source's items)
    packed: int
    total: int
    shards: list[ShardEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    max_count: int | None = None
    max_size: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    listing_sha256: str = ""

    @property
    def complete(self) -> bool:
        """Whether every item of the source is in a shard or listed as skipped."""
        return self.packed == self.total

    @property
    def count(self) -> int:
        """Samples in all the shards."""
        return sum(entry.count for entry in self.shards)

    @property
    def total_bytes(self) -> int:
        """Size of all the shards."""
        return sum(entry.bytes for entry in self.shards)

    def url(self, entry: ShardEntry | str) -> str:
        """Where shard ``entry`` (or a file name) is: the root joined with its name.

        A local directory gives a path; a URL prefix (``https://host/shards``,
        ``pipe:...``) gives the prefix, ``/`` and the name, or, when the prefix holds
        ``{name}``, the prefix with the name put there (a pipe command needs words after it).
        """
        return _join(self.root, entry if isinstance(entry, str) else entry.name)

    def urls(self) -> list[str]:
        """The URL of every shard, in order."""
        return [self.url(entry) for entry in self.shards]

    def to_dict(self) -> dict[str, Any]:
        """The index as ``index.json`` holds it (``root`` is where it is read from, not stored)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "source": self.source,
            "size": self.size,
            "class_names": list(self.class_names),
            "pretrain": self.pretrain,
            "order_seed": self.order_seed,
            "max_count": self.max_count,
            "max_size": self.max_size,
            "max_pixels": self.max_pixels,
            "listing_sha256": self.listing_sha256,
            "packed": self.packed,
            "total": self.total,
            "count": self.count,
            "shards": [asdict(entry) for entry in self.shards],
            "skipped": [[path, reason] for path, reason in self.skipped],
        }

    def to_json(self) -> str:
        """The text of ``index.json``: one key per line and one line per shard, so that a
        large index stays readable and diffs well."""
        fields = self.to_dict()
        lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in fields.items() if key not in ("shards", "skipped")]
        for key in ("shards", "skipped"):
            rows = ",\n".join(f"    {json.dumps(row)}" for row in fields[key])
            lines.append(f"  {json.dumps(key)}: [\n{rows}\n  ]" if rows else f"  {json.dumps(key)}: []")
        return "{\n" + ",\n".join(lines) + "\n}\n"


def is_shard_dir(path: str | Path) -> bool:
    """Whether ``path`` is a local directory holding an ``index.json``."""
    try:
        path = Path(path)
        return path.is_dir() and (path / INDEX_FILE).is_file()
    except (OSError, ValueError):  # a URL or a name the file system cannot hold
        return False


def load_index(root: str | Path) -> ShardIndex:
    """Read and check ``index.json`` of a shard directory or URL prefix.

    ``root`` is a local directory, or a prefix that ``webdataset.gopen`` opens once
    joined with ``/index.json`` (``https://host/shards``), or a prefix holding ``{name}``
    (``pipe:aws s3 cp s3://bucket/shards/{name} -``).

    Raises:
        DataError: one line naming the file and the key or value at fault: the file is
            missing or not JSON, another format or version, a key missing or of the
            wrong type, counts that disagree with the labels, a label or test position
            out of range.
    """
    root_text = str(root)
    local = os.path.isdir(root_text) or not _has_scheme(root_text)
    where = os.path.join(root_text, INDEX_FILE) if local else _join(root_text, INDEX_FILE)
    try:
        if local:
            with open(where, "rb") as handle:
                text = handle.read()
        else:
            with webdataset.gopen(where, "rb") as handle:
                text = handle.read()
    except FileNotFoundError:
        raise DataError(f"{where} does not exist: {root_text} is not a shard directory (write one with `selfsup shards`)") from None
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {where}: {error}") from error
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{where} is not valid JSON ({error})") from error
    return _parse_index(data, root_text, where)


def _join(root: str, name: str) -> str:
    """``root``/``name``, or ``root`` with ``name`` in place of its ``{name}``."""
    if NAME_PLACEHOLDER in root:
        return root.replace(NAME_PLACEHOLDER, name)
    return f"{root.rstrip('/')}/{name}" if root else name


def _has_scheme(text: str) -> bool:
    """Whether ``text`` is a URL (``https://``, ``pipe:``, ``file:``) rather than a path."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", text) is not None


def _parse_index(data: Any, root: str, where: str) -> ShardIndex:
    def fail(problem: str) -> DataError:
        return DataError(f"{where}: {problem}")

    if not isinstance(data, dict):
        raise fail(f"expected a JSON object, found {type(data).__name__}")

    def get(key: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
        if key not in data:
            raise fail(f"missing key {key!r}")
        value = data[key]
        if value is None and optional:
            return None
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            raise fail(f"key {key!r} should be {_kind_name(kind)}{' or null' if optional else ''}, found {value!r:.60}")
        return value

    if data.get("format") != FORMAT:
        raise fail(f"key 'format' is {data.get('format')!r}, expected {FORMAT!r}: not a selfsup shard index")
    if data.get("version") != VERSION:
        raise fail(f"key 'version' is {data.get('version')!r}; this selfsup reads version {VERSION}")
    size = get("size", int, optional=True)
    if size is not None and size < 1:
        raise fail(f"key 'size' should be a positive number of pixels or null, found {size}")
    class_names = get("class_names", list)
    if not all(isinstance(name, str) for name in class_names):
        raise fail("key 'class_names' should be a list of strings")
    pretrain = get("pretrain", str)
    if pretrain not in PRETRAIN_SPLITS:
        raise fail(f"key 'pretrain' is {pretrain!r}, expected one of {', '.join(PRETRAIN_SPLITS)}")
    packed, total = get("packed", int), get("total", int)
    if not 0 <= packed <= total:
        raise fail(f"key 'packed' is {packed}, expected 0..total ({total})")
    max_count, max_size = get("max_count", int, optional=True), get("max_size", int, optional=True)
    shards = [_parse_entry(entry, number, len(class_names), fail) for number, entry in enumerate(get("shards", list))]
    names = [entry.name for entry in shards]
    if len(set(names)) != len(names):
        raise fail("key 'shards' names a file twice")
    skipped = get("skipped", list)
    if not all(isinstance(item, list) and len(item) == 2 and all(isinstance(part, str) for part in item) for item in skipped):
        raise fail("key 'skipped' should be a list of [path, reason] string pairs")
    # A directory that holds only index.json can point at shards elsewhere: an object store
    # through a URL webdataset's gopen opens ("https://...", "pipe:aws s3 cp s3://b/d/{name} -").
    shards_at = get("shards_at", str, optional=True) if "shards_at" in data else None
    index = ShardIndex(
        root=shards_at or root,
        source=get("source", str),
        size=size,
        class_names=list(class_names),
        pretrain=pretrain,
        order_seed=get("order_seed", int),
        packed=packed,
        total=total,
        shards=shards,
        skipped=[(path, reason) for path, reason in skipped],
        max_count=max_count,
        max_size=max_size,
        max_pixels=get("max_pixels", int),
        listing_sha256=get("listing_sha256", str),
    )
    if "count" in data and data["count"] != index.count:
        raise fail(f"key 'count' is {data['count']!r} but the shards hold {index.count} samples")
    if index.count + len(index.skipped) != index.packed:
        # Every packed item is either in a shard or skipped.
        raise fail(f"key 'packed' is {packed} but the shards hold {index.count} samples and {len(index.skipped)} items are skipped")
    return index


def _parse_entry(entry: Any, number: int, classes: int, fail) -> ShardEntry:
    where = f"shards[{number}]"
    if not isinstance(entry, dict):
        raise fail(f"{where} should be an object, found {entry!r:.60}")
    values = {}
    for key, kind in (("name", str), ("count", int), ("bytes", int), ("sha256", str), ("labels", list), ("test", list)):
        if key not in entry:
            raise fail(f"{where} is missing key {key!r}")
        value = entry[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise fail(f"{where}.{key} should be {_kind_name(kind)}, found {value!r:.60}")
        values[key] = value
    name, count, labels, test = values["name"], values["count"], values["labels"], values["test"]
    # The name is joined to the root: only a plain shard file name, never a path.
    if not _SHARD_NAME.fullmatch(name):
        raise fail(f"{where}.name {name!r} is not a shard file name (shard-NNNNNN.tar)")
    if count < 0 or values["bytes"] < 0:
        raise fail(f"{where}: count and bytes should not be negative")
    if not _SHA256.fullmatch(values["sha256"]):
        raise fail(f"{where}.sha256 {values['sha256']!r:.80} is not a hex SHA-256 digest")
    if len(labels) != count:
        raise fail(f"{where} ({name}) has count {count} but {len(labels)} labels")
    if not all(isinstance(label, int) and not isinstance(label, bool) and -1 <= label < classes for label in labels):
        bad = next(label for label in labels if not (isinstance(label, int) and not isinstance(label, bool) and -1 <= label < classes))
        raise fail(f"{where}.labels ({name}) holds {bad!r}, not a class index in -1..{classes - 1}")
    for position in test:
        if not isinstance(position, int) or isinstance(position, bool) or not 0 <= position < count:
            raise fail(f"{where}.test ({name}) holds position {position!r}, out of range 0..{count - 1}")
    if any(later <= earlier for earlier, later in zip(test, test[1:])):
        raise fail(f"{where}.test ({name}) should hold increasing positions")
    return ShardEntry(name=name, count=count, bytes=values["bytes"], sha256=values["sha256"], labels=list(labels), test=list(test))


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "an integer", str: "a string", list: "a list", dict: "an object"}
    return " or ".join(names.get(one, one.__name__) for one in _as_tuple(kind))


class ShardSample(NamedTuple):
    """One sample of a shard, its members undecoded."""

    key: str  # the members' shared name, e.g. "000001234"
    position: int  # index in tar order within its shard
    extension: str  # the image member's extension, e.g. "png", "jpg"
    data: bytes  # the image file's bytes
    meta: dict  # the parsed KEY.json ({} when absent)
    label: int  # from KEY.cls, else -1


def iter_shard(url: str, count: int | None = None) -> Iterator[ShardSample]:
    """Stream the samples of one shard, in tar order, with constant memory.

    ``url`` is anything ``webdataset.gopen`` opens: a local path, ``file:``,
    ``pipe:COMMAND`` (the command writes the tar to stdout), ``http(s)://``. Members are
    read one at a time (tar stream mode) and grouped by key with webdataset's own
    ``tar_file_iterator`` and ``group_by_keys``. ``count``: the samples the shard should
    hold (its index entry's), checked at the end.

    A tar reader stops quietly where a file cut at a member boundary ends, so the end
    is checked too: the stream must finish with the two zero blocks that close a tar.

    Raises:
        DataError: naming ``url``, when it cannot be opened, is truncated or not a tar,
            holds another number of samples than ``count``, or a sample lacks an image
            member or has an unreadable ``.json`` or ``.cls``.
    """
    try:
        raw = webdataset.gopen(url, "rb")
    except (OSError, ValueError) as error:
        raise DataError(f"cannot open shard {url}: {error}") from error
    stream = _TailReader(raw)
    finished = False
    try:
        members = ({**member, "__url__": url} for member in tar_file_iterator(stream))
        position = -1
        for position, sample in enumerate(group_by_keys(members)):
            yield _shard_sample(url, position, sample)
        stream.drain()
        if stream.tail != bytes(_END_OF_ARCHIVE):
            raise DataError(f"cannot read shard {url}: truncated (it does not end with the end-of-archive blocks)")
        if count is not None and position + 1 != count:
            raise DataError(f"cannot read shard {url}: it holds {position + 1} samples, the index says {count}")
        finished = True
    except (tarfile.TarError, OSError, EOFError, ValueError) as error:
        # A pipe whose command failed leaves an empty or short stream; its exit says why.
        command_failed = _close_error(raw)
        if command_failed:
            raise DataError(f"cannot read shard {url}: {command_failed}") from error
        if isinstance(error, DataError):
            raise
        raise DataError(f"cannot read shard {url}: {type(error).__name__}: {_first_arg(error)}") from error
    finally:
        command_failed = _close_error(raw)
        if command_failed and finished:
            raise DataError(f"cannot read shard {url}: {command_failed}")


def _close_error(stream) -> str:
    """Close ``stream``; what went wrong (a ``pipe:`` command's exit status), else ``""``."""
    try:
        stream.close()
    except OSError as error:
        return _first_arg(error)
    return ""


#: A tar ends with two zero blocks (then zero padding to its record size).
_END_OF_ARCHIVE = 2 * tarfile.BLOCKSIZE


class _TailReader:
    """A read-only stream that remembers the last bytes it passed on."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.tail = b""

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if data:
            self.tail = (self.tail + data)[-_END_OF_ARCHIVE:]
        return data

    def drain(self) -> None:
        """Read to the end (the tar reader stops at the first zero block)."""
        while self.read(1 << 16):
            pass


def _first_arg(error: BaseException) -> str:
    # webdataset appends the URL and stream to an exception's args; the first is the message.
    message = str(error.args[0]) if error.args else str(error)
    failed_pipe = re.search(r"exit (\d+) \(read\)", message)  # webdataset's Pipe: the command failed
    return f"the command exited with status {failed_pipe.group(1)}" if failed_pipe else message


def _shard_sample(url: str, position: int, sample: dict[str, Any]) -> ShardSample:
    key = sample["__key__"]
    images = sorted(name for name in sample if not name.startswith("__") and name not in _META_EXTENSIONS)
    if not images:
        raise DataError(f"shard {url}: sample {key} has no image member (only {', '.join(sorted(n for n in sample if not n.startswith('__')))})")
    meta: dict = {}
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"shard {url}: {key}.json is not valid JSON ({error})") from error
        if not isinstance(meta, dict):
            raise DataError(f"shard {url}: {key}.json should hold an object")
    label = -1
    if "cls" in sample:
        try:
            label = int(sample["cls"].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError) as error:
            raise DataError(f"shard {url}: {key}.cls should hold a class index, found {sample['cls'][:20]!r}") from error
    return ShardSample(key=key, position=position, extension=images[0], data=sample[images[0]], meta=meta, label=label)


def decode_shard_sample(
    sample: ShardSample,
    channels: int,
    size: int,
    *,
    url: str,
    background: str = DEFAULT_BACKGROUND,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """Decode a shard sample's image to uint8 ``[channels, size, size]`` and its warnings,
    exactly as a folder's file is decoded (:func:`decode_image_with_warnings`).

    ``url`` is the shard's: messages name the image ``URL#KEY.EXT``.

    Raises:
        ImageDecodeError: (a DataError) when the image cannot be decoded, saying why.
    """
    name = f"{url}#{sample.key}.{sample.extension}"
    return decode_image_with_warnings(name, channels, size, background=background, max_pixels=max_pixels, data=sample.data)
