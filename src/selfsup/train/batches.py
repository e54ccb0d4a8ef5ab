"""The inputs of every training step as a function of (seed, step, rank): which samples,
their augmented views, the labelled support batch of semi-supervised methods.

Determinism is by construction rather than by saved random state: the order of the data in
epoch e is a permutation drawn from a generator seeded with (seed, e), and the augmentations
of step t from a generator seeded with (seed, rank, t). A run killed at any point and resumed
from its last checkpoint therefore replays exactly the steps it lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from selfsup.augment.views import seeded_generator
from selfsup.config import ConfigError
from selfsup.data import SampleSet
from selfsup.methods import Batch

# Augmentation streams besides the per-rank training views (seeded_generator's ``stream``).
SUPPORT_STREAM, EPOCH_PASS_STREAM, METHOD_STREAM = 1 << 20, 1 << 21, 1 << 22

ViewMaker = Callable[[torch.Tensor, torch.Generator], list[torch.Tensor]]


def seed_mix(*values: int) -> int:
    """One 64-bit seed from several integers (boost's hash_combine)."""
    mixed = 0x9E3779B97F4A7C15
    for value in values:
        mixed = (mixed ^ (value + 0x9E3779B97F4A7C15 + (mixed << 6) + (mixed >> 2))) & 0xFFFFFFFFFFFFFFFF
    return mixed


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
        """The dataset indices of step ``step``'s support batch, class by class."""
        classes, per_class = self.pool.shape
        generator = torch.Generator().manual_seed(seed_mix(self.seed, step, 0x5EED) % 2**63)
        picks = torch.rand(classes, per_class, generator=generator).argsort(dim=1)[:, : self.support_per_class]
        return self.pool.gather(1, picks).flatten()


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
        views = self.view_maker(self.train_set.gather(indices, self.device), generator)
        if self.channels_last:
            # Image batches only: channels-last is a 4-d layout (clips are [B, T, C, H, W]).
            views = [view.contiguous(memory_format=torch.channels_last) if view.dim() == 4 else view for view in views]
        return views

    def step_inputs(self, step: int) -> tuple[list[torch.Tensor], Batch]:
        indices = self.indices(step)
        views = self.views(indices, seeded_generator(self.seed, step, self.device, stream=self.rank))
        generator = seeded_generator(self.seed, step, self.device, stream=METHOD_STREAM + self.rank)
        batch = Batch(indices=indices.to(self.device), generator=generator)
        if self.support is not None:
            support = self.support.indices(step)
            support_views = self.views(support, seeded_generator(self.seed, step, self.device, stream=SUPPORT_STREAM))
            batch.support_views = torch.cat(support_views[:2])
            batch.support_labels = self.train_set.labels[support].repeat(2).to(self.device)
        return views, batch

    def epoch_pass(self, epoch: int) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        """A pass over the whole training set in index order with training augmentations
        (seeded by the epoch), for methods that need every sample at an epoch's start."""
        for start in range(0, len(self.train_set), self.batch_size):
            indices = torch.arange(start, min(start + self.batch_size, len(self.train_set)))
            generator = seeded_generator(self.seed, epoch, self.device, stream=EPOCH_PASS_STREAM + start)
            yield self.views(indices, generator), indices.to(self.device)
