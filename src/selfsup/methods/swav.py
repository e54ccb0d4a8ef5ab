"""SwAV: Swapping Assignments between Views (the method behind SEER)."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.heads import SWAV_PROTOTYPES, ProjectionHead, Prototypes, fit_prototypes
from selfsup.losses import sinkhorn, swav_multicrop
from selfsup.methods.base import SMALL_BATCH_LARS, Batch, Method, StepInfo, StepOutput, project_by_size
from selfsup.methods.memory import RingBuffer


class SwAV(Method):
    """SwAV (Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, NeurIPS 2020); SEER (Goyal et
    al. 2021) is this method on RegNets and uncurated images.

    z = normalise(g(f(x))) with an MLP projector g (2048 hidden, BN, 128-d); scores
    s = z C^T against K prototypes C whose rows are re-normalised before every step
    (sec. 3.1) and kept fixed during the first epoch. Codes q = Sinkhorn-Knopp(s) (eq. 3,
    epsilon 0.05, 3 iterations, over the global batch) from the two global crops only;
    loss (eq. 1-2) = swapped prediction: the code of each global crop is predicted from
    softmax(s / 0.1) of every other crop, local crops included (multi-crop, sec. 3.2: the
    paper's 2 global + 6 local crops are the ``multicrop`` view recipe).

    ``prototypes=0`` lets ``selfsup pretrain`` fit K to the data (one prototype per 10
    images, at most the paper's 3,000; built directly, 0 means 3,000). ``queue_size`` > 0
    keeps that many past embeddings per global crop (the paper's queue for batches under
    256, 3,840 for batch 256); they join the batch in Sinkhorn once the queue is full. As
    in the reference code the queue is local to each process.

    Paper recipe: LARS, lr 0.3 x batch/256 (4.8 at 4,096), weight decay 1e-6, multi-crop
    (``augment.recipe=multicrop train.lr=0.3 train.lars_trust=0.001 train.lars_clip=false``;
    the ``seer`` recipe says so). selfsup's default is solo-learn's CIFAR configuration: two
    ``small-images`` views, LARS at lr 0.6 x batch/256 with trust 0.02 and its step capped
    (``train.lars_clip``), weight decay 1e-6. After 15 minutes on Fashion-MNIST it reached
    57.5 / 75.9 at 1 and 10 labels per class where the paper's recipe stayed under raw pixels
    (43.3 / 67.9; BENCHMARKS.md "Barlow Twins, SwAV, DeepCluster-v2 and DINO at small-batch
    recipes").

    Energy: F(x, y) = swapped cross-entropy between the views, -1/2 sum_k [q_y,k log p_x,k
    + q_x,k log p_y,k] with p = softmax(s / T) and q = softmax(s / epsilon), the
    per-image code before the batch-level equal partition.
    """

    name = "swav"
    summary = "clustering: swapped prediction of Sinkhorn codes over prototypes (Caron et al. 2020)"
    train_recipe = {"optimizer": "lars", "lr": 0.6, "weight_decay": 1e-6, "epochs": 100, **SMALL_BATCH_LARS}
    has_prototypes = True
    data_sized_options = {"prototypes": fit_prototypes}

    def __init__(self, backbone: nn.Module, backbone_dim: int, projection_dim: int = 128, hidden_dim: int = 2048,
                 prototypes: int = 0, temperature: float = 0.1, epsilon: float = 0.05, sinkhorn_iterations: int = 3,
                 freeze_prototypes_epochs: float = 1.0, queue_size: int = 0):
        super().__init__(backbone)
        self.projector = ProjectionHead(backbone_dim, hidden_dim, projection_dim, layers=2)
        self.prototypes = Prototypes(projection_dim, prototypes or SWAV_PROTOTYPES)
        self.temperature, self.epsilon, self.sinkhorn_iterations = temperature, epsilon, sinkhorn_iterations
        self.freeze_prototypes_epochs = freeze_prototypes_epochs
        self.frozen = True
        # Past embeddings of the two global crops, [queue_size, 2, D] rows.
        self.queue = RingBuffer(queue_size, (2, projection_dim))
        self._step_embeddings: torch.Tensor | None = None  # enqueued by on_step_end

    def upgrade_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "queue_filled" in state:  # before the RingBuffer: [crops, size, D], newest row first
            queue, filled = state.pop("queue"), bool(state.pop("queue_filled"))
            size = queue.shape[1]
            count = size if filled else int(queue.abs().sum(dim=(0, 2)).gt(0).sum())
            rows = torch.zeros(size, queue.shape[0], queue.shape[2])
            rows[:count] = queue.transpose(0, 1)[:count].flip(0)  # oldest first, as the ring fills
            state.update(RingBuffer.state("queue.", rows, count % size if size else 0, count))
        return state

    def project(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.projector(self.backbone(images)), dim=1)

    def on_step_start(self, info: StepInfo) -> None:
        # Before the step rather than after the previous one: the prototypes the step uses are
        # unit vectors from the very first step on, as the reference normalises at the start
        # of each iteration.
        self.prototypes.normalize_()
        self.frozen = info.step < self.freeze_prototypes_epochs * info.steps_per_epoch

    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        z = project_by_size(self.project, views)
        scores = [self.prototypes(view_z, frozen=self.frozen) for view_z in z]
        with torch.no_grad():
            codes = [self._codes(scores[i], z[i], i) for i in range(2)]
            if len(self.queue):
                self._step_embeddings = torch.stack([z[0], z[1]], dim=1)
        loss = swav_multicrop(scores, codes, self.temperature)
        return StepOutput(loss, {"prototypes_frozen": float(self.frozen)}, embeddings=z[0].detach(), assignments=codes[0])

    def _codes(self, scores: torch.Tensor, z: torch.Tensor, crop: int) -> torch.Tensor:
        if len(self.queue) and self.queue.full:
            queued = self.prototypes(self.queue.rows[:, crop].to(z.dtype))
            return sinkhorn(torch.cat([queued, scores.detach()]), self.epsilon, self.sinkhorn_iterations)[len(queued) :]
        return sinkhorn(scores.detach(), self.epsilon, self.sinkhorn_iterations)

    def on_step_end(self, info: StepInfo) -> None:
        if self._step_embeddings is not None:
            self.queue.push(self._step_embeddings)
            self._step_embeddings = None

    @torch.no_grad()
    def prototype_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """softmax(s / epsilon): each image's code before the batch-level equal partition
        (which would hide a collapse by spreading identical images evenly)."""
        return torch.softmax(self.prototypes(self.project(images)) / self.epsilon, dim=1)

    @torch.no_grad()
    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        scores_x, scores_y = self.prototypes(self.project(x)), self.prototypes(self.project(y))
        log_p_x, log_p_y = (torch.log_softmax(s / self.temperature, dim=1) for s in (scores_x, scores_y))
        q_x, q_y = (torch.softmax(s / self.epsilon, dim=1) for s in (scores_x, scores_y))
        return -0.5 * ((q_y * log_p_x).sum(dim=1) + (q_x * log_p_y).sum(dim=1))
