"""SimSiam: Exploring Simple Siamese Representation Learning."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.heads import ProjectionHead
from selfsup.losses import negative_cosine
from selfsup.methods.base import Batch, Method, StepOutput


class SimSiam(Method):
    """SimSiam (Chen & He, CVPR 2021).

    Backbone f and a 3-layer projector ending in BN (2048-d) give z; a bottleneck predictor
    h (2048 -> 512 -> 2048) gives p. Loss (eq. 4): D(p_a, sg(z_b)) / 2 + D(p_b, sg(z_a)) / 2
    with D the negative cosine. The stop-gradient is what prevents collapse (sec. 4.1).
    Recipe: SGD, momentum 0.9, the predictor's learning rate not decayed (sec. 4.2: "fix
    lr" for the predictor); lr 0.5 x batch/256 and weight decay 1e-5, solo-learn's CIFAR
    configuration (the paper's ImageNet 0.05 and 1e-4: ``train.lr=0.05
    train.weight_decay=1e-4``), which after 15 minutes on Fashion-MNIST passed raw pixels at
    1 and 10 labels per class where the ImageNet values stayed below (BENCHMARKS.md
    "SimSiam, Barlow Twins and the multi-crop methods with the grid").

    Energy: F(x, y) = -cos(h(z(x)), z(y)).
    """

    name = "simsiam"
    summary = "asymmetric: predictor + stop-gradient, no negatives, no EMA (Chen & He 2021)"
    train_recipe = {"optimizer": "sgd", "lr": 0.5, "weight_decay": 1e-5, "epochs": 100}

    def __init__(self, backbone: nn.Module, backbone_dim: int, projection_dim: int = 2048, predictor_dim: int = 512):
        super().__init__(backbone)
        self.projector = ProjectionHead(backbone_dim, projection_dim, projection_dim, layers=3, output_norm=True)
        self.predictor = ProjectionHead(projection_dim, predictor_dim, projection_dim, layers=2)

    def fixed_lr_modules(self) -> list[nn.Module]:
        return [self.predictor]

    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        z = self.project_two_views(views)
        z_a, z_b = z.chunk(2)
        p_a, p_b = self.predictor(z).chunk(2)
        loss = (negative_cosine(p_a, z_b) + negative_cosine(p_b, z_a)) / 2
        return StepOutput(loss, embeddings=z_a.detach())

    @torch.no_grad()
    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -torch.nn.functional.cosine_similarity(self.predictor(self.project(x)), self.project(y), dim=-1)
