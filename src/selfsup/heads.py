"""Projection and prediction heads that sit on top of a backbone's [B, D] features."""

from __future__ import annotations

from torch import nn


class ProjectionHead(nn.Sequential):
    """MLP projector: (Linear -> BN -> ReLU) x (layers - 1) -> Linear [-> BN].

    SimCLR (Chen et al. 2020, sec. 2.1 and appendix B.9) uses a 2-layer MLP with BN on the
    hidden layer; SimCLR v2, BYOL, SimSiam and Barlow Twins use 2-3 layers, SimSiam with BN
    on the output too (``output_norm=True``); MoCo v2's head has no BN (``hidden_norm=False``).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        layers: int = 2,
        output_norm: bool = False,
        hidden_norm: bool = True,
    ):
        if layers < 1:
            raise ValueError(f"a projection head needs at least 1 layer, got layers={layers}")
        modules: list[nn.Module] = []
        width = input_dim
        for _ in range(layers - 1):
            if hidden_norm:
                modules += [nn.Linear(width, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim)]
            else:
                modules.append(nn.Linear(width, hidden_dim))
            modules.append(nn.ReLU(inplace=True))
            width = hidden_dim
        modules.append(nn.Linear(width, output_dim, bias=not output_norm))
        if output_norm:
            modules.append(nn.BatchNorm1d(output_dim, affine=False))
        super().__init__(*modules)
        self.output_dim = output_dim
