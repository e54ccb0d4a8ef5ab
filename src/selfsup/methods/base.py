"""The Method base class: what every SSL method exposes to the trainer, evaluation and the
commands, and the registry that subclassing fills."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from selfsup.config import ConfigError, convert_value

# What the trainer hands to ``on_train_start`` and ``on_epoch_start``: a fresh pass over the
# whole training set in index order, yielding (views, dataset indices) augmented from a fixed seed.
TrainingViews = Callable[[], Iterator[tuple[list[torch.Tensor], torch.Tensor]]]

# solo-learn's LARS for small batches (eta_lars 0.02 with clip_lr), where the SimCLR and BYOL
# reference (trust 0.001, no cap) barely moves the weights at batch 256 (BENCHMARKS.md
# "SimCLR with solo-learn's LARS").
SMALL_BATCH_LARS = {"lars_trust": 0.02, "lars_clip": True}

#: Every method class by its command-line name; a subclass of :class:`Method` that sets
#: ``name`` adds itself (see :meth:`Method.__init_subclass__`).
METHODS: dict[str, type[Method]] = {}

# Constructor arguments a method receives from the run rather than from its configuration
# (video methods also get the clip shape they are built for).
BUILT_ARGUMENTS = ("self", "backbone", "backbone_dim", "clip")


@dataclass(frozen=True)
class StepInfo:
    """Where training stands when a per-step hook runs: ``step`` is the 0-based step about
    to run (``on_step_start``, ``on_epoch_start``) or just run (``on_step_end``), of
    ``total_steps`` planned, ``steps_per_epoch`` to an epoch."""

    step: int
    total_steps: int
    steps_per_epoch: int

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch


@dataclass
class Batch:
    """What a step knows about its images besides their views.

    ``indices``: the dataset index of each image (memory banks, DeepCluster's assignments).
    ``support_views`` / ``support_labels``: a labelled support batch, two augmented views
    of each image (all first views, then all second views) and their classes, drawn by the
    trainer for semi-supervised methods (PAWS) only.
    ``generator``: seeded by (seed, step, rank), for randomness a method draws itself
    (word2vec's noise words), so that a resumed run draws what the uninterrupted one did.
    """

    indices: torch.Tensor | None = None
    support_views: torch.Tensor | None = None
    support_labels: torch.Tensor | None = None
    generator: torch.Generator | None = None


@dataclass
class StepOutput:
    """What a training step returns: the loss to minimise, scalars worth logging, and the
    (detached) embeddings of one view, on which the trainer watches for collapse."""

    loss: torch.Tensor
    metrics: dict[str, float | torch.Tensor] = field(default_factory=dict)  # tensors: read at log steps only
    embeddings: torch.Tensor | None = None
    # Clustering methods: each image's (soft) assignment to the prototypes [B, K], from
    # which the trainer logs prototype usage and flags collapse of the assignments.
    assignments: torch.Tensor | None = None


class Method(nn.Module):
    """An SSL method: a backbone, its heads, the per-step state, and an energy F(x, y).

    Subclasses implement :meth:`forward` (a training step on a list of views, global crops
    first) and, unless they have a ``projector`` on the backbone, :meth:`project` (the
    embedding the objective compares). The base class gives :meth:`embed` (backbone
    features, what evaluation uses), :meth:`energy` (by default 1 - cosine of the projected
    embeddings) and no-op hooks. The hooks are where state that is not learned by gradient
    changes: :meth:`on_step_end` after every optimiser step (EMA teachers, queues, memory
    banks, centres: :meth:`forward` only computes what they need), :meth:`on_step_start`
    for what the coming step reads (schedules, frozen layers), :meth:`on_epoch_start` and
    :meth:`on_train_start` for passes over the whole data.

    A subclass that sets ``name`` registers itself in :data:`METHODS`; its hyper-parameters
    are its constructor's keyword arguments, typed by their annotations, with the paper's
    values as defaults.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for `selfsup methods`
    modality: ClassVar[str] = "image"  # what the method learns from: image, text or video
    default_recipe: ClassVar[str] = "small-images"  # augmentation recipe (selfsup.augment.views)
    # The backbone the method is built on when backbone.name is null; None = the modality's
    # default (convnet-small for images). Text methods name their encoder, video methods "frames".
    default_backbone: ClassVar[str | None] = None
    # The backbones it can use: names starting with this (masked-image methods: "vit-", whose
    # patch tokens they select; "" = any, with default_backbone as the default); None = only
    # default_backbone when that is set, else any.
    backbone_family: ClassVar[str | None] = None
    # The optimisation recipe used when the configuration leaves it open (train.* = null);
    # lr is per 256 samples and scaled linearly with the global batch; an optional "clip_grad"
    # is the gradient-norm clipping the method needs, an optional "batch_size" the samples
    # per step and process (else 256), optional "lars_trust" and "lars_clip" LARS's trust
    # coefficient and its cap (SMALL_BATCH_LARS).
    train_recipe: ClassVar[dict] = {"optimizer": "sgd", "lr": 0.05, "weight_decay": 1e-4, "epochs": 100}
    # Options sized to the training data when left at 0 (MoCo's queue, SwAV's prototypes):
    # option -> its value for a given number of training samples.
    data_sized_options: ClassVar[dict[str, Callable[[int], int]]] = {}

    # Capabilities beyond embed and energy, read by evaluation and the commands.
    has_prototypes: ClassVar[bool] = False  # prototype_probabilities (clustering methods)
    reconstructs_pixels: ClassVar[bool] = False  # reconstruct(images, generator) (masked autoencoders)
    # energy(x, y) scores y's hidden part against what x's visible part predicts: the energy
    # AUC's compatible pairs are then (a view, the same view), not two views of one image.
    energy_within_view: ClassVar[bool] = False
    # The backbone's pooling when backbone.pool is null, where the backbone offers it: "mean"
    # for methods that never train a vision transformer's [CLS] token (MAE, I-JEPA); None
    # keeps the backbone's own default.
    default_pool: ClassVar[str | None] = None
    predicts_tokens: ClassVar[bool] = False  # token_log_probabilities (language models)
    has_word_vectors: ClassVar[bool] = False  # word_vectors (static word models)
    samples_futures: ClassVar[bool] = False  # sample_futures (models with a frame decoder)
    # Text methods: how the view maker corrupts the token ids (a scheme of
    # selfsup.augment.masking.MASKINGS) and whether the encoder's attention is causal.
    masking: ClassVar[str] = "none"
    causal_attention: ClassVar[bool] = False
    # Semi-supervised methods set these (per instance): the trainer then fixes a labelled pool
    # of ``labels_per_class`` images per class and passes a support batch drawn from it every step.
    labels_per_class: int = 0
    support_per_class: int = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and cls.name:  # shared bases without a name stay out
            if cls.name in METHODS and METHODS[cls.name].__qualname__ != cls.__qualname__:
                raise TypeError(f"method name {cls.name!r} is taken by {METHODS[cls.name].__qualname__}")
            METHODS[cls.name] = cls

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    # ------------------------------------------------------------------ options
    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """The hyper-parameters and their paper defaults (the constructor's keyword arguments)."""
        parameters = inspect.signature(cls.__init__).parameters
        return {key: p.default for key, p in parameters.items() if key not in BUILT_ARGUMENTS}

    @classmethod
    def resolve_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """``{name, **hyper-parameters}`` with every default filled in, each value checked
        against its annotation; unknown keys and bad values raise :class:`ConfigError`."""
        defaults = cls.option_defaults()
        unknown = sorted(set(options) - set(defaults) - {"name"})
        if unknown:
            raise ConfigError(
                f"unknown config key 'method.{unknown[0]}' for method {cls.name!r}; allowed: {', '.join(defaults) or '(none)'}"
            )
        hints = typing.get_type_hints(cls.__init__)
        resolved: dict[str, Any] = {"name": cls.name}
        for key, default in defaults.items():
            resolved[key] = convert_value(hints[key], options.get(key, default), f"method.{key}")
        return resolved

    @classmethod
    def fit_options(cls, options: dict[str, Any], num_samples: int) -> dict[str, Any]:
        """``options`` with the :attr:`data_sized_options` left at 0 sized to the data; the
        resolved values are what ``config.yaml`` records."""
        fitted = dict(options)
        for key, fit in cls.data_sized_options.items():
            if fitted.get(key, 0) == 0:
                fitted[key] = fit(num_samples)
        return fitted

    def upgrade_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A checkpoint's tensors with the names and layouts of earlier versions of this
        method brought to the current ones (so that older runs still load); as they are by
        default."""
        return state

    def fixed_lr_modules(self) -> list[nn.Module]:
        """Modules whose learning rate stays at its base value (SimSiam's predictor)."""
        return []

    # ------------------------------------------------------------------ training step
    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        raise NotImplementedError

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """The embedding the objective compares, [B, D']: projector(backbone(images)) for
        methods with a ``projector``; methods that compare something else override it."""
        return self.projector(self.backbone(images))

    def project_two_views(self, views: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`project` of the first two views in one pass, [2B, D'], the first view's rows
        first (one pass of larger matrices is faster, and BatchNorm statistics are shared by
        both views, as in the reference implementations); ``.chunk(2)`` splits it per view."""
        return self.project(torch.cat([views[0], views[1]]))

    # ------------------------------------------------------------------ what evaluation reads
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
        """Methods with ``has_prototypes``: soft assignments [B, K] of ``images`` to the
        prototypes, for the usage diagnostics in ``summary.json``."""
        raise NotImplementedError(f"{type(self).__name__} has no prototypes")

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, training_views: TrainingViews) -> None:
        """Called once before the first step of a run or of its resumption, for statistics
        of the whole corpus that are not learned (word2vec's noise distribution, GloVe's
        co-occurrence counts)."""

    def on_epoch_start(self, info: StepInfo, training_views: TrainingViews) -> None:
        """Called before the first step of every epoch (DeepCluster's k-means)."""

    def on_step_start(self, info: StepInfo) -> None:
        """Called before each step (schedules counted in epochs, frozen parameters)."""

    def on_step_end(self, info: StepInfo) -> None:
        """Called after each optimiser step (EMA teachers, momentum, queues, banks, centres)."""


class TwoViewMethod(Method):
    """A symmetric joint-embedding method: both views through the same backbone and
    projector, a loss of the pair (SimCLR, Barlow Twins, VICReg, the naive Siamese net)."""

    def pair_loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        z_a, z_b = self.project_two_views(views).chunk(2)
        return StepOutput(self.pair_loss(z_a, z_b), embeddings=z_a.detach())


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
