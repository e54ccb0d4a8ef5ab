"""Momentum (EMA) encoders: BYOL's target, MoCo's key encoder (DINO's teacher later)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class MomentumEncoder(nn.Module):
    """A frozen copy of an online backbone and projector, updated after every step as

        theta' <- m theta' + (1 - m) theta

    Buffers (BN running statistics) are copied as they are, as in the BYOL and MoCo
    reference code. The copy is part of the method's state_dict, so checkpoints hold it.
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module):
        super().__init__()
        self.backbone = copy.deepcopy(backbone)
        self.projector = copy.deepcopy(projector)
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(images))

    @torch.no_grad()
    def update(self, backbone: nn.Module, projector: nn.Module, momentum: float) -> None:
        online = nn.ModuleList([backbone, projector])
        copies = nn.ModuleList([self.backbone, self.projector])
        for target, source in zip(copies.parameters(), online.parameters()):
            target.lerp_(source, 1 - momentum)
        for target, source in zip(copies.buffers(), online.buffers()):
            target.copy_(source)
