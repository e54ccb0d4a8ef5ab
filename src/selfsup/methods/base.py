"""The Method base class: what every SSL method exposes to the trainer and evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

# What the trainer hands to ``on_epoch_start``: a fresh pass over the whole training set in
# index order, yielding (views, dataset indices) augmented from a fixed seed.
TrainingViews = Callable[[], Iterator[tuple[list[torch.Tensor], torch.Tensor]]]


@dataclass
class Batch:
    """What a step knows about its images besides their views.

    ``indices``: the dataset index of each image (memory banks, DeepCluster's assignments).
    ``support_views`` / ``support_labels``: a labelled support batch, two augmented views
    of each image (all first views, then all second views) and their classes, drawn by the
    trainer for semi-supervised methods (PAWS) only.
    ``generator``: a generator seeded by (seed, step, rank) for randomness inside a step.
    """

    indices: torch.Tensor | None = None
    support_views: torch.Tensor | None = None
    support_labels: torch.Tensor | None = None
    # Seeded by the step: randomness a method draws itself (word2vec's noise words), so
    # that a resumed run draws what the uninterrupted one did.
    generator: torch.Generator | None = None


@dataclass
class StepOutput:
    """What a training step returns: the loss to minimise, scalars worth logging, and the
    (detached) embeddings of one view, on which the trainer watches for collapse."""

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    embeddings: torch.Tensor | None = None
    # Clustering methods: each image's (soft) assignment to the prototypes [B, K], from
    # which the trainer logs prototype usage and flags collapse of the assignments.
    assignments: torch.Tensor | None = None


class Method(nn.Module):
    """An SSL method: a backbone, its heads, the per-step state, and an energy F(x, y).

    Subclasses implement :meth:`forward` (a training step on a list of views, global crops
    first) and, unless they have a ``projector`` on the backbone, :meth:`project` (the
    embedding the objective compares). The base class gives
    :meth:`embed` (backbone features, what evaluation uses), :meth:`energy` (low when the two
    images are views of one another, by default 1 - cosine of the projected embeddings) and
    no-op hooks for methods with momentum encoders, queues, schedules or memory banks:
    :meth:`on_step_start`, :meth:`on_step_end` and :meth:`on_epoch_start`.

    Class attributes: ``name`` (the CLI name), ``summary`` (one line for ``selfsup methods``),
    ``default_recipe`` (the augmentation recipe name in :mod:`selfsup.augment.views`) and
    ``train_recipe`` (optimiser, lr per 256 images, weight decay, epochs; optionally
    ``batch_size``, else 256, and ``clip_grad``).
    """

    name: str = ""
    summary: str = ""
    modality: str = "image"  # what the method learns from: image (views) or text (token ids)
    default_recipe: str = "small-images"
    # The optimisation recipe used when the configuration leaves it open (train.* = null);
    # lr is per 256 images and scaled linearly with the global batch; an optional "clip_grad"
    # is the gradient-norm clipping the method needs (null train.clip_grad takes it), and an
    # optional "batch_size" the samples per step and process (else 256).
    train_recipe: dict = {"optimizer": "sgd", "lr": 0.05, "weight_decay": 1e-4, "epochs": 100}
    # Semi-supervised methods set this (per instance): the trainer then fixes a labelled pool
    # of this many images per class and passes a support batch drawn from it every step.
    labels_per_class: int = 0
    support_per_class: int = 0
    # Clustering methods set this and implement prototype_probabilities.
    has_prototypes: bool = False

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    @classmethod
    def fit_options(cls, options: dict, num_images: int) -> dict:
        """Hyper-parameters sized to the data set (e.g. MoCo's queue); the resolved values are
        what ``config.yaml`` records."""
        return options

    def fixed_lr_modules(self) -> list[nn.Module]:
        """Modules whose learning rate stays at its base value (SimSiam's predictor)."""
        return []

    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        raise NotImplementedError

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """The embedding the objective compares, [B, D']: projector(backbone(images)) for
        methods with a ``projector``; methods that compare something else override it."""
        return self.projector(self.backbone(images))

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features [B, D] used for kNN, linear and few-shot evaluation."""
        return self.backbone(images)

    @torch.no_grad()
    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """F(x, y) [B]: 1 - cos(project(x), project(y)); 0 for identical embeddings, 2 for opposite."""
        return 1 - torch.nn.functional.cosine_similarity(self.project(x), self.project(y), dim=-1)

    @torch.no_grad()
    def prototype_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Clustering methods: soft assignments [B, K] of ``images`` to the prototypes, for
        the usage diagnostics in ``summary.json``."""
        raise NotImplementedError(f"{type(self).__name__} has no prototypes")

    def on_train_start(self, training_views: TrainingViews) -> None:
        """Called once before the first step of a run or of its resumption, for statistics
        of the whole corpus that are not learned (word2vec's noise distribution, GloVe's
        co-occurrence counts)."""

    def on_epoch_start(self, epoch: int, training_views: TrainingViews) -> None:
        """Called before the first step of every epoch (DeepCluster's k-means)."""

    def on_step_start(self, step: int, total_steps: int, steps_per_epoch: int) -> None:
        """Called before each step (schedules counted in epochs, frozen parameters)."""

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Called after each optimiser step (EMA teachers, momentum, queues, schedules)."""


def project_by_size(project: Callable[[torch.Tensor], torch.Tensor], views: list[torch.Tensor]) -> list[torch.Tensor]:
    """``project`` applied to every view, one pass per crop size (the global crops together,
    the local crops together, as the multi-crop reference code does), split back per view."""
    outputs: list[torch.Tensor] = []
    start = 0
    while start < len(views):
        end = start
        while end < len(views) and views[end].shape == views[start].shape:
            end += 1
        outputs += project(torch.cat(views[start:end])).chunk(end - start)
        start = end
    return outputs
