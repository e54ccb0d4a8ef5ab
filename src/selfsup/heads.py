"""Projection and prediction heads that sit on top of a backbone's [B, D] features."""

from __future__ import annotations

import math

import torch
from torch import nn

# SwAV's and DeepCluster-v2's prototype count (Caron et al. 2020), and DINO's output count
# (Caron et al. 2021), at ImageNet scale.
SWAV_PROTOTYPES, DINO_OUTPUTS = 3000, 65536
_IMAGES_PER_PROTOTYPE, _IMAGES_PER_DINO_OUTPUT = 10, 16


def fit_prototypes(num_images: int) -> int:
    """SwAV's 3,000 prototypes, fewer on small data sets (one per 10 images, at least 10),
    so that Sinkhorn's equal partition stays meaningful."""
    return max(10, min(SWAV_PROTOTYPES, num_images // _IMAGES_PER_PROTOTYPE))


def fit_dino_outputs(num_images: int) -> int:
    """DINO's 65,536 outputs, fewer on small data sets: the power of two nearest to one per
    16 images, at least 64."""
    return max(64, min(DINO_OUTPUTS, 2 ** round(math.log2(max(1, num_images / _IMAGES_PER_DINO_OUTPUT)))))


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


class Prototypes(nn.Module):
    """K learnable prototype vectors c_k; ``forward(z) = z C^T``, the scores of SwAV,
    DeepCluster-v2 and the last layer of DINO's head.

    With ``normalize=True`` the rows are L2-normalised in the forward pass, so the scores of
    L2-normalised ``z`` are cosines whatever the stored scale: DINO's weight-normalised last
    layer with its gain fixed at 1 (``norm_last_layer=True`` in the reference code). SwAV
    instead re-normalises the stored rows in place before each step (:meth:`normalize_`).
    ``frozen=True`` detaches them for one forward pass (SwAV's prototypes and DINO's last
    layer stay fixed during the first epoch, which the papers found stabilises training).
    """

    def __init__(self, dim: int, count: int, normalize: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(count, dim))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Linear's initialisation
        self.normalize = normalize

    def forward(self, z: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        weight = self.weight.detach() if frozen else self.weight
        if self.normalize:
            weight = nn.functional.normalize(weight, dim=1)
        return z @ weight.T

    @torch.no_grad()
    def normalize_(self) -> None:
        self.weight.copy_(nn.functional.normalize(self.weight, dim=1))


class DINOHead(nn.Module):
    """DINO's projection head (Caron et al. 2021, sec. 3.1 and appendix; ``DINOHead`` in the
    reference main_dino code): an MLP (``layers`` linear layers, ``hidden_dim`` wide, GELU,
    optional BN) to a ``bottleneck_dim`` bottleneck, L2-normalisation, then a
    weight-normalised linear layer without bias to ``output_dim`` outputs (gain fixed at 1).
    The MLP is initialised with a truncated normal (std 0.02), as the reference.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        layers: int = 3,
        batch_norm: bool = False,
    ):
        super().__init__()
        modules: list[nn.Module] = []
        width = input_dim
        for _ in range(layers - 1):
            modules.append(nn.Linear(width, hidden_dim))
            if batch_norm:
                modules.append(nn.BatchNorm1d(hidden_dim))
            modules.append(nn.GELU())
            width = hidden_dim
        modules.append(nn.Linear(width, bottleneck_dim))
        self.mlp = nn.Sequential(*modules)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = Prototypes(bottleneck_dim, output_dim, normalize=True)
        self.output_dim = output_dim

    def forward(self, features: torch.Tensor, freeze_last_layer: bool = False) -> torch.Tensor:
        z = nn.functional.normalize(self.mlp(features), dim=-1)
        return self.last_layer(z, frozen=freeze_last_layer)
