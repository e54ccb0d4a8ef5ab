"""Momentum (EMA) copies of networks: BYOL's target, MoCo's key encoder, DINO's teacher."""

from __future__ import annotations

import copy

import torch
from torch import nn


class MomentumCopy(nn.Module):
    """A frozen copy of ``online`` updated as theta' <- m theta' + (1 - m) theta.

    Buffers (BN running statistics) are copied as they are, as in the BYOL and MoCo
    reference code. The copy is part of the method's state_dict, so checkpoints hold it.
    """

    def __init__(self, online: nn.Module):
        super().__init__()
        self.module = copy.deepcopy(online)
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, online: nn.Module, momentum: float) -> None:
        for target_parameter, source_parameter in zip(self.module.parameters(), online.parameters()):
            target_parameter.lerp_(source_parameter, 1 - momentum)
        for target_buffer, source_buffer in zip(self.module.buffers(), online.buffers()):
            target_buffer.copy_(source_buffer)

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.module(*args, **kwargs)
