"""The inputs of every training step as a function of (seed, step, rank): which samples,
their augmented views, the labelled support batch of semi-supervised methods.

Determinism is by construction rather than by saved random state: the order of the data in
epoch e is a permutation drawn from a generator seeded with (seed, e) (for a streamed
source, the shuffled shards and shuffle buffers of :mod:`selfsup.data.stream`, also a
function of (seed, e)), and the augmentations of step t from a generator seeded with
(seed, rank, t). A run killed at any point, mid-epoch included, and resumed from its last
checkpoint therefore replays exactly the steps it lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from selfsup.augment.views import seeded_generator
from selfsup.config import ConfigError
from selfsup.data import SampleSet
from selfsup.data.base import seed_mix
from selfsup.data.stream import StreamBatch, StreamingImageSet
from selfsup.methods import Batch

# Augmentation streams besides the per-rank training views (seeded_generator's ``stream``).
SUPPORT_STREAM, EPOCH_PASS_STREAM, METHOD_STREAM = 1 << 20, 1 << 21, 1 << 22

ViewMaker = Callable[[torch.Tensor, torch.Generator], list[torch.Tensor]]


class SupportSampler:
    """The labelled images a semi-supervised method may see (``labels_per_class`` per class,
    drawn once from ``seed``; every other label stays hidden), and every step
    ``support_per_class`` of them per class, without replacement (all of them when the pool
    is that small)."""

    def __init__(self, labels: torch.Tensor, labels_per_class: int, support_per_class: int, seed: int, set_name: str):
        generator = torch.Generator().manual_seed(seed_mix(seed, 0x5EED) % 2**63)
        order = torch.randperm(len(labels), generator=generator)
        classes = sorted(set(labels[labels >= 0].tolist()))
        if not classes:
            raise ConfigError(f"method.labels_per_class={labels_per_class} needs labelled images, but {set_name} has no labels")
        pool = []
        for label in classes:
            members = order[labels[order] == label][:labels_per_class]
            if len(members) < labels_per_class:
                raise ConfigError(
                    f"method.labels_per_class={labels_per_class} but class {label} of {set_name} has only {len(members)} images"
                )
            pool.append(members)
        self.pool = torch.stack(pool)  # [classes, labels_per_class] dataset indices
        self.support_per_class, self.seed = support_per_class, seed

    def indices(self, step: int) -> torch.Tensor:
        """Positions in :attr:`pool` (flattened) of step ``step``'s support batch, class by class."""
        classes, per_class = self.pool.shape
        generator = torch.Generator().manual_seed(seed_mix(self.seed, step, 0x5EED) % 2**63)
        picks = torch.rand(classes, per_class, generator=generator).argsort(dim=1)[:, : self.support_per_class]
        return (picks + torch.arange(classes).unsqueeze(1) * per_class).flatten()


class TrainingBatches:
    """Step ``t``'s samples and views on this process (``rank`` of ``world``), each process
    taking its own slice of the global batch."""

    def __init__(self, train_set: SampleSet, view_maker: ViewMaker, seed: int, batch_size: int, world: int, rank: int,
                 device: torch.device, channels_last: bool, support: SupportSampler | None = None):
        self.train_set, self.view_maker = train_set, view_maker
        self.seed, self.batch_size, self.world, self.rank = seed, batch_size, world, rank
        self.device, self.channels_last, self.support = device, channels_last, support
        self.global_batch = batch_size * world
        self.steps_per_epoch = len(train_set) // self.global_batch
        # The labelled pool, decoded once (a streamed set has no cheap random access).
        self.support_set = None if support is None else train_set.subset(support.pool.flatten(), "support")
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"train.batch_size={batch_size} x {world} process(es) is larger than the data "
                f"({len(train_set)} samples in {train_set.name}); lower train.batch_size"
            )
        self._epoch_order: tuple[int, torch.Tensor | None] = (-1, None)  # (epoch, permutation of the data)

    def indices(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.steps_per_epoch)
        if self._epoch_order[0] != epoch:
            generator = torch.Generator().manual_seed(seed_mix(self.seed, epoch) % 2**63)
            self._epoch_order = (epoch, torch.randperm(len(self.train_set), generator=generator))
        start = position * self.global_batch + self.rank * self.batch_size
        return self._epoch_order[1][start : start + self.batch_size]

    def views(self, indices: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        return self._views(self.train_set.gather(indices, self.device), generator)

    def _views(self, samples: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        views = self.view_maker(samples, generator)
        if self.channels_last:
            # Image batches only: channels-last is a 4-d layout (clips are [B, T, C, H, W]).
            views = [view.contiguous(memory_format=torch.channels_last) if view.dim() == 4 else view for view in views]
        return views

    def step_samples(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Step ``step``'s samples on this process and their indices."""
        indices = self.indices(step)
        return self.train_set.gather(indices, self.device), indices

    def step_inputs(self, step: int) -> tuple[list[torch.Tensor], Batch]:
        samples, indices = self.step_samples(step)
        views = self._views(samples, seeded_generator(self.seed, step, self.device, stream=self.rank))
        generator = seeded_generator(self.seed, step, self.device, stream=METHOD_STREAM + self.rank)
        batch = Batch(indices=indices.to(self.device), generator=generator)
        if self.support is not None:
            support = self.support.indices(step)
            support_views = self._views(self.support_set.gather(support, self.device),
                                        seeded_generator(self.seed, step, self.device, stream=SUPPORT_STREAM))
            batch.support_views = torch.cat(support_views[:2])
            batch.support_labels = self.support_set.labels[support].repeat(2).to(self.device)
        return views, batch

    def epoch_pass(self, epoch: int) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        """A pass over the whole training set in index order with training augmentations
        (seeded by the epoch), for methods that need every sample at an epoch's start."""
        for start in range(0, len(self.train_set), self.batch_size):
            indices = torch.arange(start, min(start + self.batch_size, len(self.train_set)))
            generator = seeded_generator(self.seed, epoch, self.device, stream=EPOCH_PASS_STREAM + start)
            yield self.views(indices, generator), indices.to(self.device)


class StreamingBatches(TrainingBatches):
    """:class:`TrainingBatches` for a streamed source: step ``t``'s samples come from the
    epoch's loader (decoding in worker processes), which is opened at the step the run
    starts or resumes from and then read in order."""

    train_set: StreamingImageSet

    def __init__(self, train_set: StreamingImageSet, *args, **kwargs):
        super().__init__(train_set, *args, **kwargs)
        self._stream: tuple[int, object] | None = None  # (the step its next batch is for, the loader)
        self._skipped = {name for name, _ in train_set.skipped}

    def step_samples(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, position = divmod(step, self.steps_per_epoch)
        if self._stream is None or self._stream[0] != step:
            loader = self.train_set.epoch(self.seed, epoch, self.batch_size, self.world, self.rank, first=position,
                                          pin_memory=self.device.type == "cuda")
            self._stream = (step, loader)
        found: StreamBatch = next(self._stream[1])
        assert found.step == position, f"the loader gave batch {found.step} for step {step} (position {position})"
        self._stream = None if position + 1 == self.steps_per_epoch else (step + 1, self._stream[1])
        self._note(found)
        return found.images.to(self.device, non_blocking=True), found.ids

    def _note(self, found: StreamBatch) -> None:
        """Count each unreadable file once (the stand-in image keeps the batch full)."""
        for name, reason in found.skipped:
            if name not in self._skipped:
                self._skipped.add(name)
                self.train_set.skipped.append((name, reason))

    def epoch_pass(self, epoch: int) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        for found in self.train_set.batches(batch=self.batch_size):
            generator = seeded_generator(self.seed, epoch, self.device, stream=EPOCH_PASS_STREAM + int(found.ids[0]))
            self._note(found)
            yield self._views(found.images.to(self.device), generator), found.ids.to(self.device)


def training_batches(train_set: SampleSet, *args, **kwargs) -> TrainingBatches:
    """The step inputs of ``train_set``: streamed or drawn from memory."""
    kind = StreamingBatches if isinstance(train_set, StreamingImageSet) else TrainingBatches
    return kind(train_set, *args, **kwargs)
