"""SimCLR: A Simple Framework for Contrastive Learning of Visual Representations."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.heads import ProjectionHead
from selfsup.losses import info_nce
from selfsup.methods.base import SMALL_BATCH_LARS, TwoViewMethod


class SimCLR(TwoViewMethod):
    """SimCLR (Chen, Kornblith, Norouzi, Hinton, ICML 2020).

    Two augmented views of each image go through a shared backbone f and a projection MLP
    g; the NT-Xent loss (eq. 1) pulls the two views of an image together and pushes the
    other 2N - 2 views of the batch away. Paper defaults: 2-layer MLP projector with BN on
    the hidden layer and a 128-d output, temperature 0.1 at large batch (0.5 at batch 256
    and below, Table 5 / appendix B.9), LARS, lr 0.3 x batch/256, weight decay 1e-6.
    Evaluation uses the backbone features (before the projector, sec. 4.2).

    Defaults here are for small images and short runs: temperature 0.5 (the paper's CIFAR-10
    setting, appendix B.9, and its best value at batch <= 512 in Table 5; 2.4 points better
    than 0.2 at 1-shot on Fashion-MNIST, BENCHMARKS.md "SimCLR's temperature with
    solo-learn's LARS"), a 2048-256 projector, LARS with lr 0.4 x
    batch/256, trust 0.02 and its step capped (``train.lars_clip``), weight decay 1e-5
    (solo-learn's CIFAR configuration). Against the reference LARS (trust 0.001, no cap),
    the cap and trust gained 5.7 points at 1 label per class and 2.1 at 10 after 15 minutes
    on Fashion-MNIST (BENCHMARKS.md "SimCLR with solo-learn's LARS").

    Energy: F(x, y) = 1 - cos(g(f(x)), g(f(y))), the quantity NT-Xent contrasts.
    """

    name = "simclr"
    summary = "contrastive: NT-Xent over two views, in-batch negatives (Chen et al. 2020)"
    train_recipe = {"optimizer": "lars", "lr": 0.4, "weight_decay": 1e-5, "epochs": 100, **SMALL_BATCH_LARS}

    def __init__(self, backbone: nn.Module, backbone_dim: int, projection_dim: int = 256, hidden_dim: int = 2048,
                 temperature: float = 0.5):
        super().__init__(backbone)
        self.projector = ProjectionHead(backbone_dim, hidden_dim, projection_dim, layers=2)
        self.temperature = temperature

    def pair_loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return info_nce(z_a, z_b, self.temperature)
