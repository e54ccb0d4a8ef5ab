"""Image collections too large to decode into memory, streamed from a folder or from tar
shards: decoding and resizing happen in DataLoader workers, batch by batch, and only a
bounded number of decoded images is ever held.

A source is a sequence of *parts* read front to back: the shards of a shard directory, or
the files of a folder (one file per part, read in any order). The order of epoch ``e`` is
a function of ``(seed, e)`` alone:

1. the parts are permuted (shuffled shard order; for a folder, a permutation of its files)
   and laid end to end;
2. the first ``steps x batch x world`` positions of that sequence are cut into one
   contiguous range per process (rank), each rank's range into one contiguous range per
   worker, worker ``w`` holding the rank's batches ``w, w + W, w + 2W, ...``; every sample
   is read by one worker of one rank, once per epoch (the remainder, fewer than one global
   batch, waits for the next epoch, whose order differs);
3. each worker emits its range through a shuffle buffer of ``buffer`` samples (shards;
   a folder's files are already in random order), simulated from counts alone; samples
   read ahead of their turn are held as their bytes, decoded when their batch is made.

A tar shard is read from its first member: a worker whose range starts inside a shard
reads (without decoding) the samples before its start, at most one shard per worker and
epoch; smaller shards (``selfsup shards --max-count``) make that cheaper on slow storage.

Because step ``t``'s samples are computable without reading anything, a run resumed in the
middle of an epoch starts each worker at the batch it reached, reading only from the
earliest sample it had not emitted: no sample is seen twice, none is skipped, and the
weights end bit-identical to an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np
import torch
from tqdm import tqdm

from selfsup.data.base import DataError, ImageSet, seed_mix
from selfsup.data.folder import ImageDecodeError, decode_image_with_warnings
from selfsup.data.shards import ShardIndex, iter_shard

__all__ = [
    "FolderParts",
    "ShardParts",
    "StreamBatch",
    "StreamingImageSet",
    "buffer_shuffle_order",
    "epoch_batches",
]

def _seed(*values: int) -> int:
    return seed_mix(*values) % 2**63


# --------------------------------------------------------------------------- parts


class RawItem(NamedTuple):
    """One undecoded sample of a part: its position among the part's samples, the name
    messages use, and the bytes (``None``: decode the file ``name``)."""

    position: int
    name: str
    data: bytes | None


class Parts(Protocol):
    """What a streamed source reads: ``counts[p]`` samples in part ``p`` (index order),
    ``labels`` of every sample in index order, and :meth:`read`."""

    counts: np.ndarray
    labels: torch.Tensor
    sequential: bool  # parts are read front to back (tar shards): a shuffle buffer orders them

    def read(self, part: int, positions: np.ndarray) -> Iterator[RawItem]:
        """The samples of ``part`` at ``positions`` (ascending), in that order."""
        ...

    def describe(self) -> str: ...


class FolderParts:
    """A folder's image files, one per part (random access)."""

    sequential = False

    def __init__(self, paths: Sequence[str], labels: torch.Tensor):
        self.paths = list(paths)
        self.labels = labels
        self.counts = np.ones(len(self.paths), dtype=np.int64)

    def read(self, part: int, positions: np.ndarray) -> Iterator[RawItem]:
        if len(positions):
            yield RawItem(0, self.paths[part], None)

    def describe(self) -> str:
        return f"{len(self.paths):,} files"


class ShardParts:
    """The shards of a shard directory, read sequentially through webdataset; ``pretrain``
    only: the samples the index says to pretrain on (a built-in set's train split)."""

    sequential = True

    def __init__(self, index: ShardIndex, pretrain_only: bool = True):
        self.urls = [index.url(entry) for entry in index.shards]
        self.packed = [entry.count for entry in index.shards]  # samples in each tar
        self.selected, labels = [], []
        for entry in index.shards:
            keep = np.ones(entry.count, dtype=bool)
            if pretrain_only and index.pretrain == "train":
                keep[np.asarray(entry.test, dtype=np.int64)] = False
            self.selected.append(np.flatnonzero(keep))
            labels.append(np.asarray(entry.labels, dtype=np.int64)[keep])
        self.counts = np.array([len(selected) for selected in self.selected], dtype=np.int64)
        self.labels = torch.from_numpy(np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64))

    def read(self, part: int, positions: np.ndarray) -> Iterator[RawItem]:
        if not len(positions):
            return
        wanted = self.selected[part][positions]  # tar positions, ascending
        url, found = self.urls[part], 0
        for sample in iter_shard(url, count=self.packed[part]):
            if found < len(wanted) and sample.position == wanted[found]:
                yield RawItem(int(positions[found]), f"{url}#{sample.key}", sample.data)
                found += 1
                if found == len(wanted):
                    return
        raise DataError(f"shard {url} ended after fewer samples than its index lists")

    def describe(self) -> str:
        return f"{len(self.urls):,} shards"


# --------------------------------------------------------------------------- the order


def buffer_shuffle_order(count: int, buffer: int, generator: np.random.Generator) -> np.ndarray:
    """The order in which a shuffle buffer of ``buffer`` samples emits ``count`` samples that
    arrive in order 0, 1, ...: fill the buffer, then for each arrival emit a uniformly drawn
    buffered sample and put the arrival in its place; at the end emit the rest in random
    order (webdataset's ``shuffle``). Sample ``i`` is emitted no earlier than position
    ``i - buffer``, so a reader holds at most ``buffer`` samples it has not emitted."""
    if buffer <= 1 or count <= 1:
        return np.arange(count, dtype=np.int64)
    draws = generator.random(count)
    order = np.empty(count, dtype=np.int64)
    held: list[int] = []
    emitted = 0
    for arrival in range(count):
        if len(held) < buffer:
            held.append(arrival)
            continue
        pick = int(draws[arrival] * len(held))
        order[emitted] = held[pick]
        held[pick] = arrival
        emitted += 1
    order[emitted:] = np.asarray(held, dtype=np.int64)[generator.permutation(len(held))]
    return order


@dataclass(frozen=True)
class StreamLayout:
    """How a job's processes and workers share an epoch: ``batch`` samples per process and
    step, ``world`` processes, ``workers`` DataLoader workers per process (at least 1),
    ``buffer`` samples in each worker's shuffle buffer."""

    batch: int
    world: int
    workers: int
    buffer: int

    def steps_per_epoch(self, total: int) -> int:
        return total // (self.batch * self.world)

    def worker_batches(self, steps: int, worker: int) -> int:
        """How many of the rank's ``steps`` batches worker ``worker`` produces (w, w+W, ...)."""
        return len(range(worker, steps, self.workers))

    def worker_range(self, steps: int, rank: int, worker: int) -> tuple[int, int]:
        """(start, length) of ``worker``'s samples on ``rank`` in the epoch's sequence."""
        start = rank * steps * self.batch + sum(self.worker_batches(steps, w) for w in range(worker)) * self.batch
        return start, self.worker_batches(steps, worker) * self.batch


class EpochOrder:
    """A sequence of the samples: the parts in ``order`` laid end to end."""

    def __init__(self, counts: np.ndarray, order: np.ndarray):
        self.counts, self.order = counts, order
        self.ends = np.cumsum(counts[order])  # cumulative sample counts along ``order``
        self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)  # first id of each part

    @classmethod
    def shuffled(cls, counts: np.ndarray, seed: int, epoch: int) -> EpochOrder:
        """Epoch ``epoch``'s sequence: the parts permuted by ``(seed, epoch)``."""
        return cls(counts, np.random.default_rng(_seed(seed, epoch)).permutation(len(counts)))

    @classmethod
    def in_index_order(cls, counts: np.ndarray) -> EpochOrder:
        return cls(counts, np.arange(len(counts)))

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index into ``order``, position within that part) of sequence ``positions``."""
        slot = np.searchsorted(self.ends, positions, side="right")
        starts = self.ends[slot] - self.counts[self.order[slot]]
        return slot, positions - starts

    def sample_ids(self, positions: np.ndarray) -> np.ndarray:
        slot, within = self.locate(positions)
        return self.offsets[self.order[slot]] + within


def emission_order(layout: StreamLayout, steps: int, seed: int, epoch: int, rank: int, worker: int) -> np.ndarray:
    """Positions in the epoch's sequence, in the order ``worker`` on ``rank`` emits them."""
    start, length = layout.worker_range(steps, rank, worker)
    generator = np.random.default_rng(_seed(seed, epoch, rank, worker, 0xB0FF))
    return start + buffer_shuffle_order(length, layout.buffer, generator)


def epoch_batches(counts: np.ndarray, seed: int, epoch: int, layout: StreamLayout, rank: int) -> np.ndarray:
    """The sample ids (index order) of each of ``rank``'s batches in epoch ``epoch``,
    ``[steps_per_epoch, batch]``: what the streaming loader yields, computed without it."""
    steps = layout.steps_per_epoch(int(counts.sum()))
    order = EpochOrder.shuffled(counts, seed, epoch)
    batches = np.empty((steps, layout.batch), dtype=np.int64)
    for worker in range(layout.workers):
        emitted = order.sample_ids(emission_order(layout, steps, seed, epoch, rank, worker)).reshape(-1, layout.batch)
        batches[worker::layout.workers] = emitted
    return batches


# --------------------------------------------------------------------------- decoding


class Decoded(NamedTuple):
    name: str
    image: torch.Tensor | None  # None: the sample could not be decoded, for ``reason``
    reason: str
    warnings: tuple[str, ...]


@dataclass
class Decoding:
    """How samples become uint8 ``[channels, size, size]`` images (decode_image's settings)."""

    channels: int
    size: int
    background: str
    max_pixels: int

    def __call__(self, item: RawItem) -> Decoded:
        try:
            decoded = decode_image_with_warnings(item.name, self.channels, self.size, background=self.background,
                                                 max_pixels=self.max_pixels, data=item.data)
        except ImageDecodeError as error:
            return Decoded(item.name, None, error.reason, ())
        return Decoded(item.name, decoded.image, "", decoded.warnings)

    def blank(self) -> torch.Tensor:
        return torch.zeros(self.channels, self.size, self.size, dtype=torch.uint8)


class StreamBatch(NamedTuple):
    """One batch from a streaming loader."""

    step: int  # the batch's position in the rank's epoch (or in a pass)
    images: torch.Tensor  # uint8 [b, C, S, S]
    ids: torch.Tensor  # int64 [b], sample ids in index order
    labels: torch.Tensor  # int64 [b], -1 unknown
    readable: torch.Tensor  # bool [b]; an unreadable sample's image is a stand-in
    names: list[str]  # each sample's file, or shard#key
    skipped: list[tuple[str, str]]  # (name, reason) of samples that could not be decoded
    warned: list[tuple[str, str]]  # (name, warning) of samples decoded with warnings


def _read_positions(parts: Parts, order: EpochOrder, positions: np.ndarray) -> Iterator[tuple[int, RawItem]]:
    """The undecoded samples at sequence ``positions`` (ascending), as (position, item)."""
    if not len(positions):
        return
    slots, within = order.locate(positions)
    boundaries = np.flatnonzero(np.diff(slots)) + 1
    for group in np.split(np.arange(len(positions)), boundaries):
        slot = int(slots[group[0]])
        part = int(order.order[slot])
        by_position = dict(zip(within[group].tolist(), positions[group].tolist(), strict=True))
        for item in parts.read(part, within[group]):
            yield by_position[item.position], item


def _assemble(step: int, decoded: list[Decoded], ids: np.ndarray, labels: torch.Tensor, decode: Decoding) -> StreamBatch:
    """A batch of exactly ``len(ids)`` images: an unreadable sample is replaced by the batch's
    first readable one (a deterministic choice) and listed in ``skipped``."""
    good = [item.image for item in decoded if item.image is not None]
    substitute = good[0] if good else decode.blank()
    images = torch.stack([substitute if item.image is None else item.image for item in decoded])
    ids_tensor = torch.from_numpy(ids.copy())
    return StreamBatch(
        step, images, ids_tensor, labels[ids_tensor], torch.tensor([item.image is not None for item in decoded]),
        [item.name for item in decoded], [(item.name, item.reason) for item in decoded if item.image is None],
        [(item.name, message) for item in decoded for message in item.warnings],
    )


def _counted(batches: Iterator[StreamBatch], total: int, description: str) -> Iterator[StreamBatch]:
    with tqdm(total=total, unit="img", desc=description, dynamic_ncols=True, disable=None) as progress:
        for found in batches:
            progress.update(len(found.ids))
            yield found


class _EpochStream(torch.utils.data.IterableDataset):
    """Rank ``rank``'s batches ``first, first + 1, ...`` of one epoch. Loader worker ``i``
    produces batches ``first + i, first + i + W, ...`` (which are planned worker
    ``(first + i) % W``'s), so that the DataLoader's round-robin over its workers yields
    them in order; with no worker processes, the planned workers are interleaved here."""

    def __init__(self, source: StreamingImageSet, seed: int, epoch: int, layout: StreamLayout, rank: int, first: int):
        self.source, self.seed, self.epoch, self.layout, self.rank, self.first = source, seed, epoch, layout, rank, first
        self.order = EpochOrder.shuffled(source.parts.counts, seed, epoch)
        self.steps = layout.steps_per_epoch(len(source))

    def _worker_batches(self, loader_worker: int) -> Iterator[StreamBatch]:
        layout, step = self.layout, self.first + loader_worker
        if step >= self.steps:
            return
        planned = step % layout.workers
        emission = emission_order(layout, self.steps, self.seed, self.epoch, self.rank, planned)
        first_batch = step // layout.workers
        needed = emission[first_batch * layout.batch :]
        wanted = np.sort(needed)
        # Read ahead of their turn, at most about one buffer: kept as the bytes read (a file's
        # compressed size), decoded when their batch is made.
        held: dict[int, RawItem] = {}
        batches = needed.reshape(-1, layout.batch)
        reader = _read_positions(self.source.parts, self.order, wanted)
        for number, positions in enumerate(batches):
            for position in positions.tolist():
                while position not in held:
                    got, item = next(reader)
                    held[got] = item
            decoded = [self.source.decoding(held.pop(position)) for position in positions.tolist()]
            ids = self.order.sample_ids(positions)
            yield _assemble(step + number * layout.workers, decoded, ids, self.source.labels, self.source.decoding)

    def __iter__(self) -> Iterator[StreamBatch]:
        info = torch.utils.data.get_worker_info()
        if info is not None:
            yield from self._worker_batches(info.id)
            return
        streams = [self._worker_batches(i) for i in range(self.layout.workers)]
        while streams:
            for stream in list(streams):
                batch = next(stream, None)
                if batch is None:
                    streams.remove(stream)
                else:
                    yield batch


class _Pass(torch.utils.data.IterableDataset):
    """Every sample at ``ids`` (ascending), in batches of ``batch``; loader worker ``i`` of
    ``W`` decodes batches ``i, i + W, ...``."""

    def __init__(self, source: StreamingImageSet, ids: np.ndarray, batch: int):
        self.source, self.ids, self.batch = source, ids, batch
        self.order = EpochOrder.in_index_order(source.parts.counts)

    def __iter__(self) -> Iterator[StreamBatch]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for number in range(worker, -(-len(self.ids) // self.batch), workers):
            ids = self.ids[number * self.batch : (number + 1) * self.batch]
            decoded = [self.source.decoding(item) for _, item in _read_positions(self.source.parts, self.order, ids)]
            yield _assemble(number, decoded, ids, self.source.labels, self.source.decoding)


# --------------------------------------------------------------------------- the set


@dataclass
class StreamingImageSet:
    """An image source read batch by batch, never whole (see the module docstring); it
    follows :class:`~selfsup.data.base.SampleSet` except that batches for training come
    from :meth:`epoch` rather than :meth:`gather`.

    ``labels`` are known up front (from the folder layout or the shard index);
    ``skipped`` grows as unreadable files are met; ``subset`` decodes the rows it is asked
    for into an in-memory :class:`ImageSet` (evaluation splits, a semi-supervised method's
    labelled pool).
    """

    parts: Parts
    name: str
    class_names: list[str]
    decoding: Decoding
    workers: int = 2
    buffer: int = 1000
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warned: list[tuple[str, str]] = field(default_factory=list)
    paths: list[str] | None = None  # a folder's file of each sample id

    @property
    def labels(self) -> torch.Tensor:
        return self.parts.labels

    def __len__(self) -> int:
        return int(self.parts.counts.sum())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return self.decoding.channels

    @property
    def height(self) -> int:
        return self.decoding.size

    width = height

    def describe_rows(self) -> str:
        return f"images ({self.channels}, {self.height}, {self.width}), streamed from {self.parts.describe()}"

    def layout(self, batch: int, world: int) -> StreamLayout:
        return StreamLayout(batch, world, max(1, self.workers), self.buffer if self.parts.sequential else 1)

    def _loader(self, dataset: torch.utils.data.IterableDataset, pin_memory: bool = False) -> Iterator[StreamBatch]:
        return iter(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=self.workers, pin_memory=pin_memory,
                                                prefetch_factor=4 if self.workers else None))

    def epoch(self, seed: int, epoch: int, batch: int, world: int, rank: int, first: int = 0,
              pin_memory: bool = False) -> Iterator[StreamBatch]:
        """Rank ``rank``'s batches ``first, first + 1, ...`` of epoch ``epoch`` (see the module docstring)."""
        return self._loader(_EpochStream(self, seed, epoch, self.layout(batch, world), rank, first), pin_memory)

    def batches(self, ids: torch.Tensor | np.ndarray | None = None, batch: int = 256,
                description: str | None = None) -> Iterator[StreamBatch]:
        """The samples at ``ids`` (all, by default) sorted in index order, in batches, decoded
        by the workers; with ``description``, a progress bar (count and rate) on a terminal."""
        ids = np.arange(len(self)) if ids is None else np.sort(np.asarray(ids, dtype=np.int64))
        loader = self._loader(_Pass(self, ids, batch))
        if description is None:
            return loader
        return _counted(loader, len(ids), description)

    def subset(self, indices: torch.Tensor | Sequence[int], name: str) -> ImageSet:
        """The samples at ``indices`` (in that order), decoded into memory."""
        indices = np.asarray(torch.as_tensor(indices, dtype=torch.int64))
        images = torch.empty((len(indices), self.channels, self.height, self.width), dtype=torch.uint8)
        rows = {int(i): r for r, i in enumerate(indices.tolist())}
        keep = np.ones(len(indices), dtype=bool)
        for found in self.batches(indices, description=f"decoding {name}"):
            at = [rows[i] for i in found.ids.tolist()]
            images[at] = found.images
            keep[at] = found.readable.numpy()
            self.skipped.extend(found.skipped)
        kept = torch.from_numpy(np.flatnonzero(keep))
        paths = None if self.paths is None else [self.paths[i] for i in indices[keep].tolist()]
        return ImageSet(images[kept], self.labels[indices][kept].clone(), name, list(self.class_names), list(self.skipped), paths)

    def gather(self, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The samples at ``indices`` (decoded now; training reads :meth:`epoch` instead)."""
        return self.subset(indices, self.name).images.to(device)

    def preview(self, count: int) -> torch.Tensor:
        """Up to ``count`` decoded images for statistics: a seeded random choice of a folder's
        files, the first samples of shards (which are packed in random order)."""
        count = min(count, len(self))
        if self.parts.sequential:
            ids = np.arange(count)
        else:
            ids = np.sort(np.random.default_rng(0).choice(len(self), size=count, replace=False))
        return torch.cat([found.images for found in self.batches(ids)])
