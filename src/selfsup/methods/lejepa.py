"""LeJEPA: every view predicts the global views' embedding, SIGReg keeps the embeddings an
isotropic Gaussian."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.heads import ProjectionHead
from selfsup.losses.sigreg import NUM_POINTS, NUM_SLICES, T_MAX, sigreg
from selfsup.methods.base import Batch, Method, StepOutput, project_by_size


def prediction_loss(z: torch.Tensor, global_views: int) -> torch.Tensor:
    """LeJEPA's prediction loss (arXiv 2511.08544, eqs. (6)-(7); Algorithm 2's ``sim``): every
    view, the global ones included, predicts the centre of the global views,

        mu_n = (1 / V_g) Σ_{v <= V_g} z_{n,v},   L_pred = mean_{v <= V, n, k} (mu_{n,k} - z_{n,v,k})^2,

    for z [V, N, K], the V_g global views first. This is (1 / (B K)) Σ_n eq. (7): Algorithm 2
    and the reference code (MINIMAL.md line 172, ``(proj.mean(0) - proj).square().mean()``) average over
    the K dimensions where eq. (7) sums them, and the default λ = 0.05 was tuned with the
    average. (The paper's eq. (5), the mean distance to each global view, exceeds eq. (6) by
    the global views' spread around their centre, (1 / V_g) Σ_g ||z_g - mu||^2: its appendix
    B.6 equates them, which holds only when the global views agree; Algorithm 2 is eq. (6).)
    """
    centre = z[:global_views].mean(dim=0)
    return (centre - z).square().mean()


class LeJEPA(Method):
    """LeJEPA (Balestriero & LeCun, "LeJEPA: Provable and Scalable Self-Supervised Learning
    Without the Heuristics", arXiv 2511.08544, 2025; reference code
    github.com/rbalestr-lab/lejepa).

    Backbone and a 3-layer projector (Linear-BN-ReLU twice, then Linear; Table 4: 3 layers do
    best; MINIMAL.md's ``MLP(512, [2048, 2048, proj_dim], norm_layer=BatchNorm1d)``) give z for
    all V = V_g + V_l views, global crops first. The loss is eq. (LeJEPA), as Algorithm 2
    computes it:

        L = (1 - λ) L_pred + λ (1 / V) Σ_{v=1..V} SIGReg({z_{n,v}}_{n=1..B})

    with L_pred of :func:`prediction_loss` (all views predict the mean of the V_g global
    views) and SIGReg (:func:`selfsup.losses.sigreg.sigreg`: the Epps-Pulley statistic on
    ``num_slices`` random unit directions, redrawn every step from ``Batch.generator``, 17
    knots on [-5, 5], averaged over directions and views), both over every view, the global
    ones included. λ = 0.05 (section 6.1, "We thus recommend to use λ = 0.05, V_g = 2");
    1024 slices and the [-5, 5] / 17-point quadrature are section 6.1's starting points. No
    predictor, EMA teacher or stop-gradient: both terms send gradients through every view.
    The 512-d projector output is the reference launch scripts' ``projector_dim=512``
    (Table 1d finds 64 slightly better).

    Views: the ``lejepa`` recipe (2 global + 6 local crops, the paper's "Experiment Details 1":
    V = 8, V_g = 2; section 6.1's text recommends V_l = 8). ``global_views`` must match the
    recipe's global crops. Any backbone works (the paper trains some 50 timm architectures,
    ResNets, ConvNeXts and ViTs among them), so none is imposed: the image modality's default
    applies (``backbone.name=vit-tiny-small`` for a small ViT). Recipe: AdamW, lr 5e-4 (per
    256 images; README "GOTO hyperparameters" and the ImageNet-1k launch scripts), weight
    decay 0.05 (the README's value for ViTs; it gives 5e-4 for ResNets), 100 epochs (the
    ImageNet-1k runs).

    Energy: F(x, y) = ||z(x) - z(y)||^2 / K, the prediction term's distance for one view
    predicting another.
    """

    name = "lejepa"
    summary = "regularised: all views predict the global views' mean, SIGReg makes embeddings isotropic Gaussian (Balestriero & LeCun 2025)"
    default_recipe = "lejepa"
    # The paper's main results are on vision transformers (ViT-S/B/L/H); any backbone works.
    default_backbone, backbone_family = "vit-tiny-small", ""
    train_recipe = {"optimizer": "adamw", "lr": 5e-4, "weight_decay": 0.05, "epochs": 100}

    def __init__(self, backbone: nn.Module, backbone_dim: int, projection_dim: int = 512, hidden_dim: int = 2048,
                 projector_layers: int = 3, lambda_sigreg: float = 0.05, num_slices: int = NUM_SLICES,
                 integration_max: float = T_MAX, integration_points: int = NUM_POINTS, global_views: int = 2):
        super().__init__(backbone)
        if not 0.0 <= lambda_sigreg <= 1.0:
            raise ValueError(f"method.lambda_sigreg must lie in [0, 1], got {lambda_sigreg}")
        for option, value, least in (("num_slices", num_slices, 1), ("integration_points", integration_points, 2),
                                     ("global_views", global_views, 1), ("projector_layers", projector_layers, 1)):
            if value < least:
                raise ValueError(f"method.{option} must be >= {least}, got {value}")
        if integration_max <= 0:
            raise ValueError(f"method.integration_max must be positive, got {integration_max}")
        self.projector = ProjectionHead(backbone_dim, hidden_dim, projection_dim, layers=projector_layers)
        self.lambda_sigreg = lambda_sigreg
        self.num_slices, self.integration_max, self.integration_points = num_slices, integration_max, integration_points
        self.global_views = global_views

    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        if len(views) < self.global_views:
            raise ValueError(f"lejepa needs at least method.global_views={self.global_views} views, got {len(views)}")
        if any(view.shape != views[0].shape for view in views[: self.global_views]):
            raise ValueError(f"the first method.global_views={self.global_views} views must be the global crops (one size), "
                             f"got sizes {[tuple(view.shape[-2:]) for view in views[: self.global_views]]}")
        if batch is None or batch.generator is None:
            raise ValueError("lejepa draws SIGReg's directions from Batch.generator")
        outputs = project_by_size(self.project, views)  # global crops in one pass, local crops in another
        z = torch.stack(outputs)  # [V, B, K]
        z = z if z.dtype == torch.float64 else z.float()  # the loss in float32 under autocast
        prediction = prediction_loss(z, self.global_views)
        regulariser = sigreg(z, generator=batch.generator, num_slices=self.num_slices,
                             t_max=self.integration_max, num_points=self.integration_points)
        loss = (1 - self.lambda_sigreg) * prediction + self.lambda_sigreg * regulariser
        metrics = {"prediction": prediction.detach(), "sigreg": regulariser.detach()}
        return StepOutput(loss, metrics, embeddings=outputs[0].detach())

    @torch.no_grad()
    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.project(x) - self.project(y)).square().mean(dim=1)
