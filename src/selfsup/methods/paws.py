"""PAWS: predicting view assignments with support samples (semi-supervised)."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.heads import ProjectionHead
from selfsup.losses import paws
from selfsup.methods.base import Batch, Method, StepOutput, project_by_size


class PAWS(Method):
    """PAWS (Assran, Caron, Misra, Bojanowski, Joulin, Ballas, Rabbat, ICCV 2021).

    A few labelled images per class form the support set. Every step the trainer draws
    ``support_per_class`` of them per class (without replacement), two augmented views
    each (the CIFAR-10 configuration's ``supervised_views: 2``); their embeddings, with
    one-hot labels smoothed by 0.1, turn any embedding into a soft nearest-neighbour class
    prediction p = softmax(z S^T / 0.1) Y (eq. 1, L2-normalised). The loss (eq. 2-4): each
    view's prediction matches the sharpened (T = 0.25) prediction of the other global view
    of the image, computed without gradient (local crops match the mean of the two), plus
    mean-entropy maximisation of the average sharpened prediction. No EMA, no negatives;
    gradients reach the support embeddings too.

    ``labels_per_class`` (``--labels-per-class N``) is how many labels per class the run may
    see, drawn once from the training set with the run's seed. ``support_per_class=0`` uses
    min(64, labels_per_class) (the CIFAR-10 configuration samples 64 per class).
    Defaults follow the paper's CIFAR-10 configuration: 3-layer projector (2048 hidden,
    BN), 128-d output, no prediction head, its augmentations (the ``paws`` view recipe: 2
    global crops at scale 0.75-1, 6 local crops at 0.3-0.75, colour strength 0.5), LARS
    with lr 3.2 x batch/256 and weight decay 1e-6. As in the reference code, the support
    views and the global views go through the encoder in one pass (one set of batch-norm
    statistics), the local crops in another.

    Energy: F(x, y) = 1 - cos(z_x, z_y), the similarity the soft nearest neighbours use.
    """

    name = "paws"
    summary = "semi-supervised: soft nearest neighbours to a few labelled supports, sharpened targets (Assran et al. 2021)"
    default_recipe = "paws"
    train_recipe = {"optimizer": "lars", "lr": 3.2, "weight_decay": 1e-6, "epochs": 100}

    def __init__(self, backbone: nn.Module, backbone_dim: int, labels_per_class: int = 10, support_per_class: int = 0,
                 projection_dim: int = 128, hidden_dim: int = 2048, temperature: float = 0.1,
                 sharpen_temperature: float = 0.25, label_smoothing: float = 0.1, me_max: bool = True):
        super().__init__(backbone)
        if labels_per_class < 1:
            raise ValueError(f"paws needs at least one label per class, got labels_per_class={labels_per_class}")
        self.labels_per_class = labels_per_class
        self.support_per_class = support_per_class or min(64, labels_per_class)
        self.projector = ProjectionHead(backbone_dim, hidden_dim, projection_dim, layers=3)
        self.temperature, self.sharpen_temperature = temperature, sharpen_temperature
        self.label_smoothing, self.me_max = label_smoothing, me_max

    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        if batch is None or batch.support_views is None:
            raise ValueError("paws needs a labelled support batch (Batch.support_views, Batch.support_labels)")
        same_size = next((i for i, view in enumerate(views) if view.shape[1:] != views[0].shape[1:]), len(views))
        together = self.project(torch.cat([batch.support_views, *views[:same_size]]))
        supports, anchors = together[: len(batch.support_views)], list(together[len(batch.support_views):].chunk(same_size))
        anchors += project_by_size(self.project, views[same_size:])
        classes = int(batch.support_labels.max()) + 1
        one_hot = nn.functional.one_hot(batch.support_labels, classes).to(supports.dtype)
        smoothed = one_hot * (1 - self.label_smoothing) + self.label_smoothing / classes
        loss = paws(anchors, supports, smoothed, self.temperature, self.sharpen_temperature, self.me_max)
        return StepOutput(loss, embeddings=anchors[0].detach())
