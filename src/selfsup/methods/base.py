"""The Method base class: what every SSL method exposes to the trainer and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class StepOutput:
    """What a training step returns: the loss to minimise, scalars worth logging, and the
    (detached) embeddings of one view, on which the trainer watches for collapse."""

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    embeddings: torch.Tensor | None = None


class Method(nn.Module):
    """An SSL method: a backbone, its heads, the per-step state, and an energy F(x, y).

    Subclasses implement :meth:`forward` (a training step on a list of views, global crops
    first) and, unless they have a ``projector`` on the backbone, :meth:`project` (the
    embedding the objective compares). The base class gives
    :meth:`embed` (backbone features, what evaluation uses), :meth:`energy` (low when the two
    images are views of one another, by default 1 - cosine of the projected embeddings) and
    a no-op :meth:`on_step_end` for methods with momentum encoders, queues or schedules.

    Class attributes: ``name`` (the CLI name), ``summary`` (one line for ``selfsup methods``),
    ``default_recipe`` (the augmentation recipe name in :mod:`selfsup.augment.views`) and
    ``train_recipe`` (optimiser, lr per 256 images, weight decay, epochs).
    """

    name: str = ""
    summary: str = ""
    default_recipe: str = "small-images"
    # The optimisation recipe used when the configuration leaves it open (train.* = null);
    # lr is per 256 images and scaled linearly with the global batch.
    train_recipe: dict = {"optimizer": "sgd", "lr": 0.05, "weight_decay": 1e-4, "epochs": 100}

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

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> StepOutput:
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

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Called after each optimiser step (EMA teachers, momentum, queues, schedules)."""
