"""MoCo v2 and MoCo v3: momentum contrast."""

from __future__ import annotations

import torch
from torch import nn

from selfsup import distributed
from selfsup.heads import ProjectionHead
from selfsup.losses import moco_info_nce, moco_v3_contrastive
from selfsup.methods.base import Batch, Method, StepInfo, StepOutput
from selfsup.methods.memory import RingBuffer
from selfsup.methods.momentum import MomentumEncoder
from selfsup.schedules import cosine_increase


class MoCoV2(Method):
    """MoCo v2 (Chen, Fan, Girshick, He 2020; MoCo: He et al., CVPR 2020).

    Query encoder: backbone + MLP head (2048 hidden, no BN, 128-d). Key encoder: its
    momentum copy (m = 0.999). Loss: InfoNCE of each query against its key and a queue of K
    past keys (eq. 1, T = 0.2); the keys of the step, gathered from every process, are then
    enqueued (oldest out). ``queue_size=0`` lets ``selfsup pretrain`` fit K to the data: a
    quarter of the images, at most the paper's 65,536, so that every key is replaced within a
    quarter epoch and the queue stays consistent with the slowly moving key encoder on small
    data sets (built directly, 0 means the paper's 65,536).

    Guard against BN leakage (the paper's shuffle-BN): the key encoder runs on
    ``bn_groups`` interleaved sub-batches (samples i, i+G, i+2G, ...), while the queries use
    contiguous ones, so a query and its key almost never share batch statistics. This is
    the one-process equivalent of shuffling keys across GPUs; it is deterministic, so it
    keeps exact resumption. Under torch.distributed each process does the same on its
    share of the batch.

    Recipe: LARS at lr 0.3 x batch/256, weight decay 1e-4 (solo-learn's CIFAR mocov2plus rate
    and decay; LARS is selfsup's choice). The paper's SGD (0.03 per 256 on ImageNet; 0.06 with
    decay 5e-4 in the MoCo CIFAR-10 demo) leaves a small convnet on its plateau: its 2-layer
    head without BatchNorm maps every image to almost one direction at initialisation, every
    logit is equal and the loss sits at ln(K + 1) (digits, 20 s: SGD at 0.06 or 0.3 stays
    there, std x sqrt(d) 0.04; LARS, whose per-layer step follows each weight's norm, leaves
    it within 20 steps, std x sqrt(d) 0.91).

    Energy: F(x, y) = 1 - cos(q(x), k(y)).
    """

    name = "moco-v2"
    summary = "contrastive: momentum key encoder and a queue of negatives (Chen et al. 2020)"
    train_recipe = {"optimizer": "lars", "lr": 0.3, "weight_decay": 1e-4, "epochs": 100}
    data_sized_options = {"queue_size": lambda num_images: max(256, min(65536, num_images // 4))}

    def __init__(self, backbone: nn.Module, backbone_dim: int, projection_dim: int = 128, hidden_dim: int = 2048,
                 temperature: float = 0.2, momentum: float = 0.999, queue_size: int = 0, bn_groups: int = 2):
        super().__init__(backbone)
        self.projector = ProjectionHead(backbone_dim, hidden_dim, projection_dim, layers=2, hidden_norm=False)
        self.key_encoder = MomentumEncoder(backbone, self.projector)
        self.temperature, self.momentum, self.bn_groups = temperature, momentum, bn_groups
        size = queue_size or 65536
        self.queue = RingBuffer(size, projection_dim, initial=nn.functional.normalize(torch.randn(size, projection_dim), dim=1))
        self._step_keys: torch.Tensor | None = None  # enqueued by on_step_end

    def upgrade_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "queue_position" in state:  # before the queue was a RingBuffer: always full
            queue, position = state.pop("queue"), state.pop("queue_position")
            state.update(RingBuffer.state("queue.", queue, int(position), len(queue)))
        return state

    def _keys(self, images: torch.Tensor) -> torch.Tensor:
        groups = min(self.bn_groups, len(images))
        keys = torch.empty(len(images), self.queue.rows.shape[1], device=images.device, dtype=images.dtype)
        for group in range(groups):
            keys[group::groups] = self.key_encoder(images[group::groups])
        return keys

    def _queries(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.project(chunk) for chunk in images.chunk(min(self.bn_groups, len(images)))])

    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        q = self._queries(views[0])
        k = self._keys(views[1])
        loss = moco_info_nce(q, k, self.queue.rows, self.temperature)
        self._step_keys = k.detach()
        return StepOutput(loss, embeddings=q.detach())

    @torch.no_grad()
    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 1 - nn.functional.cosine_similarity(self.project(x), self.key_encoder(y), dim=-1)

    def on_step_end(self, info: StepInfo) -> None:
        # The keys of the step, gathered from every process, replace the oldest in the queue.
        if self._step_keys is not None:
            self.queue.push(nn.functional.normalize(distributed.gather(self._step_keys).float(), dim=1))
            self._step_keys = None
        self.key_encoder.update(self.backbone, self.projector, self.momentum)


class MoCoV3(Method):
    """MoCo v3 (Chen, Xie, He, ICCV 2021), ResNet variant.

    Query encoder: backbone + 3-layer projector (4096 hidden in the paper, BN, 256-d) +
    2-layer predictor;
    momentum encoder: a copy of backbone + projector with m rising from 0.99 to 1 on a
    cosine. Loss (Algorithm 1): ctr(q_a, k_b) + ctr(q_b, k_a), in-batch InfoNCE over the
    global batch scaled by 2T; T = 1.0 for ResNets (0.2 for ViTs). Recipe: LARS, lr 0.3 x
    batch/256 (ResNet-50: 0.6 for 100 epochs at batch 4096), weight decay 1e-6 (1.5e-6).
    The heads are 2048 wide by default (``method.hidden_dim=4096`` for the paper's): on the
    CPU default backbone the 4096-wide heads took most of a step, and half the width gave
    twice the steps in a budget and better probes in every column (BENCHMARKS.md "BYOL and
    MoCo v3 sized for a CPU budget").

    Energy: F(x, y) = 1 - cos(predictor(q(x)), k(y)).
    """

    name = "moco-v3"
    summary = "contrastive: symmetric in-batch InfoNCE against a momentum encoder, with predictor (Chen et al. 2021)"
    train_recipe = {"optimizer": "lars", "lr": 0.3, "weight_decay": 1e-6, "epochs": 100}

    def __init__(self, backbone: nn.Module, backbone_dim: int, projection_dim: int = 256, hidden_dim: int = 2048,
                 temperature: float = 1.0, base_momentum: float = 0.99):
        super().__init__(backbone)
        self.projector = ProjectionHead(backbone_dim, hidden_dim, projection_dim, layers=3, output_norm=True)
        self.predictor = ProjectionHead(projection_dim, hidden_dim, projection_dim, layers=2, output_norm=True)
        self.key_encoder = MomentumEncoder(backbone, self.projector)
        self.temperature, self.base_momentum = temperature, base_momentum
        self.momentum = base_momentum

    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        both = torch.cat([views[0], views[1]])  # one batch for the query and the key encoder
        z = self.project(both)
        q_a, q_b = self.predictor(z).chunk(2)
        k_a, k_b = self.key_encoder(both).chunk(2)
        loss = moco_v3_contrastive(q_a, k_b, self.temperature) + moco_v3_contrastive(q_b, k_a, self.temperature)
        return StepOutput(loss, {"momentum": self.momentum}, embeddings=z.chunk(2)[0].detach())

    @torch.no_grad()
    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 1 - nn.functional.cosine_similarity(self.predictor(self.project(x)), self.key_encoder(y), dim=-1)

    def on_step_end(self, info: StepInfo) -> None:
        self.momentum = cosine_increase(info.step, info.total_steps, self.base_momentum)
        self.key_encoder.update(self.backbone, self.projector, self.momentum)
