"""BYOL: Bootstrap Your Own Latent."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.heads import ProjectionHead
from selfsup.losses import byol_mse
from selfsup.methods.base import Batch, Method, StepInfo, StepOutput
from selfsup.methods.momentum import MomentumEncoder
from selfsup.schedules import cosine_increase


class BYOL(Method):
    """BYOL (Grill et al., NeurIPS 2020).

    Online network: backbone f, projector g (MLP 4096 -> 256, BN), predictor q (same shape).
    Target network: an exponential moving average of f and g, with momentum tau rising from
    0.996 to 1 on a cosine over training (sec. 3.2). Loss (eq. 2, symmetrised): the
    normalised MSE 2 - 2 cos(q(g(f(v))), sg(g'(f'(v')))) over both orderings of the two
    views. Paper recipe: LARS, lr 0.2 x batch/256, weight decay 1.5e-6; the asymmetric
    augmentations of the ``byol`` recipe (blur 1.0/0.1, solarise 0/0.2, whole-image crops),
    ``augment.recipe=byol``. selfsup's default views are ``small-images`` (16 px crops of 28
    px images, no blur), as for SimCLR: 2.4x the steps in a budget, and above raw pixels
    at 1 and 10 labels per class where the paper's views were below (BENCHMARKS.md "BYOL
    and MoCo v3 sized for a CPU budget").

    Energy: F(x, y) = 2 - 2 cos(q(g(f(x))), g'(f'(y))), the quantity the loss minimises.
    """

    name = "byol"
    summary = "asymmetric: online predictor regresses an EMA target, no negatives (Grill et al. 2020)"
    train_recipe = {"optimizer": "lars", "lr": 1.0, "weight_decay": 1e-5, "epochs": 100}

    def __init__(self, backbone: nn.Module, backbone_dim: int, projection_dim: int = 256, hidden_dim: int = 4096,
                 base_momentum: float = 0.996):
        super().__init__(backbone)
        self.projector = ProjectionHead(backbone_dim, hidden_dim, projection_dim, layers=2)
        self.predictor = ProjectionHead(projection_dim, hidden_dim, projection_dim, layers=2)
        self.target = MomentumEncoder(backbone, self.projector)
        self.base_momentum = base_momentum
        self.momentum = base_momentum

    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        both = torch.cat([views[0], views[1]])  # one batch for the online and the target network
        z = self.project(both)
        p_a, p_b = self.predictor(z).chunk(2)
        target_a, target_b = self.target(both).chunk(2)
        loss = byol_mse(p_a, target_b) + byol_mse(p_b, target_a)
        return StepOutput(loss, {"momentum": self.momentum}, embeddings=z.chunk(2)[0].detach())

    @torch.no_grad()
    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        prediction = self.predictor(self.project(x))
        return 2 - 2 * torch.nn.functional.cosine_similarity(prediction, self.target(y), dim=-1)

    def on_step_end(self, info: StepInfo) -> None:
        # A function of the step, not a running state: resuming needs nothing saved.
        self.momentum = cosine_increase(info.step, info.total_steps, self.base_momentum)
        self.target.update(self.backbone, self.projector, self.momentum)
