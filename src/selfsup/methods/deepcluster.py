"""DeepCluster-v2: k-means pseudo-labels over a memory bank of embeddings."""

from __future__ import annotations

import torch
from torch import nn

from selfsup import distributed
from selfsup.heads import ProjectionHead, fit_prototypes
from selfsup.losses import deepcluster
from selfsup.methods.base import (
    SMALL_BATCH_LARS,
    Batch,
    Method,
    StepInfo,
    StepOutput,
    TrainingViews,
    project_by_size,
)

_KMEANS_CHUNK = 8192  # rows per block of the k-means distance computation (bounded memory)


@torch.no_grad()
def spherical_kmeans(
    x: torch.Tensor, clusters: int, iterations: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means on L2-normalised rows ``x`` [N, D] with cosine similarity, as DeepCluster-v2:
    centroids start at ``clusters`` distinct random rows; each iteration assigns every row to
    its most similar centroid and moves each non-empty cluster's centroid to the normalised
    mean of its rows (empty clusters keep theirs). Returns (centroids [K, D], assignments [N])
    from a final assignment step."""
    if clusters > len(x):
        raise ValueError(f"k-means with {clusters} clusters needs at least as many rows, got {len(x)}")
    centroids = x[torch.randperm(len(x), generator=generator)[:clusters].to(x.device)].clone()
    for iteration in range(iterations + 1):
        assignments = torch.cat([(chunk @ centroids.T).argmax(dim=1) for chunk in x.split(_KMEANS_CHUNK)])
        if iteration == iterations:
            break
        sums = torch.zeros_like(centroids).index_add_(0, assignments, x)
        counts = torch.bincount(assignments, minlength=clusters)
        filled = counts > 0
        centroids[filled] = nn.functional.normalize(sums[filled], dim=1)
    return centroids, assignments


class DeepClusterV2(Method):
    """DeepCluster-v2 (Caron et al., NeurIPS 2020, the SwAV paper, sec. 4 and appendix A;
    reference main_deepclusterv2.py), the offline counterpart of SwAV.

    z = normalise(g(f(x))) with SwAV's projector. A memory bank keeps the latest z of every
    image for each of the two global crops. At the start of each epoch, spherical k-means
    (10 iterations) runs on the bank once per head (3 heads; head h clusters global crop
    h mod 2), giving K centroids, which become that head's prototypes, and a pseudo-label
    per image. Loss: for each head, cross-entropy of softmax(z C^T / 0.1) of every crop
    (multi-crop, local crops included) against the image's pseudo-label, averaged over
    heads. Before the first epoch the bank is filled by one pass over the data, as the
    reference's ``init_memory``. Prototypes are the centroids: not learned between
    clusterings.

    ``prototypes=0`` fits K to the data like SwAV (one per 10 images, at most 3,000);
    ``dataset_size`` (the bank's rows) is set from the data by ``selfsup pretrain``. Under
    torch.distributed every process holds the whole bank, filled with the gathered
    embeddings of every rank, and runs the same seeded k-means, so all agree without
    further communication.

    Paper recipe: as SwAV's (LARS, lr 0.3 x batch/256, weight decay 1e-6, multi-crop
    views: ``augment.recipe=multicrop train.lr=0.3 train.lars_trust=0.001
    train.lars_clip=false``). selfsup's default is solo-learn's CIFAR configuration, as for
    SwAV: two ``small-images`` views, LARS at lr 0.6 x batch/256 with trust 0.02 and its
    step capped, weight decay 1e-6. After 15 minutes on Fashion-MNIST it reached 53.0 / 74.1
    at 1 and 10 labels per class where the paper's recipe stayed under raw pixels at 10
    (48.0 / 69.4; BENCHMARKS.md "Barlow Twins, SwAV, DeepCluster-v2 and DINO at small-batch
    recipes").

    Energy: F(x, y) = mean over heads of -log softmax(z_x C^T / T)[nearest centroid of z_y]:
    how badly x predicts y's cluster.
    """

    name = "deepcluster-v2"
    summary = "clustering: k-means pseudo-labels over a memory bank each epoch (Caron et al. 2020)"
    train_recipe = {"optimizer": "lars", "lr": 0.6, "weight_decay": 1e-6, "epochs": 100, **SMALL_BATCH_LARS}
    has_prototypes = True
    data_sized_options = {"prototypes": fit_prototypes}

    def __init__(self, backbone: nn.Module, backbone_dim: int, projection_dim: int = 128, hidden_dim: int = 2048,
                 prototypes: int = 0, heads: int = 3, temperature: float = 0.1, kmeans_iterations: int = 10,
                 dataset_size: int = 0, kmeans_seed: int = 0):
        super().__init__(backbone)
        if dataset_size <= 0:
            raise ValueError("deepcluster-v2 needs dataset_size (the number of training images) for its memory bank")
        self.projector = ProjectionHead(backbone_dim, hidden_dim, projection_dim, layers=2)
        self.temperature, self.kmeans_iterations, self.kmeans_seed = temperature, kmeans_iterations, kmeans_seed
        count = prototypes or fit_prototypes(dataset_size)
        self.register_buffer("centroids", nn.functional.normalize(torch.randn(heads, count, projection_dim), dim=2))
        self.register_buffer("memory", torch.zeros(2, dataset_size, projection_dim))
        self.register_buffer("assignments", torch.full((heads, dataset_size), -1, dtype=torch.long))
        self.register_buffer("memory_filled", torch.zeros((), dtype=torch.bool))
        self._step_embeddings: tuple[torch.Tensor, list[torch.Tensor]] | None = None  # written by on_step_end

    @classmethod
    def fit_options(cls, options: dict, num_samples: int) -> dict:
        # One bank row per training image, whatever a copied config.yaml says.
        return dict(super().fit_options(options, num_samples), dataset_size=num_samples)

    def project(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.projector(self.backbone(images)), dim=1)

    @torch.no_grad()
    def on_epoch_start(self, info: StepInfo, training_views: TrainingViews) -> None:
        if not bool(self.memory_filled):
            for views, indices in training_views():
                z = project_by_size(self.project, views[:2])
                for crop in range(2):
                    self.memory[crop, indices] = z[crop].to(self.memory.dtype)
            self.memory_filled.fill_(True)
        generator = torch.Generator().manual_seed(self.kmeans_seed * 1_000_003 + info.epoch)
        for head in range(self.centroids.shape[0]):
            centroids, assignments = spherical_kmeans(self.memory[head % 2], self.centroids.shape[1], self.kmeans_iterations, generator)
            self.centroids[head] = centroids
            self.assignments[head] = assignments

    def forward(self, views: list[torch.Tensor], batch: Batch | None = None) -> StepOutput:
        if batch is None or batch.indices is None:
            raise ValueError("deepcluster-v2 needs the dataset indices of the batch (Batch.indices) for its memory bank")
        z = project_by_size(self.project, views)
        targets = self.assignments[:, batch.indices]
        loss = sum(deepcluster([view_z @ centroids.T for view_z in z], head_targets, self.temperature)
                   for centroids, head_targets in zip(self.centroids, targets)) / len(self.centroids)
        self._step_embeddings = (batch.indices, [z[0].detach(), z[1].detach()])
        one_hot = nn.functional.one_hot(targets[0].clamp_min(0), self.centroids.shape[1]).float()
        return StepOutput(loss, embeddings=z[0].detach(), assignments=one_hot)

    @torch.no_grad()
    def on_step_end(self, info: StepInfo) -> None:
        # The bank keeps the newest embedding of every image, from every process.
        if self._step_embeddings is not None:
            indices, z = self._step_embeddings
            indices = distributed.gather(indices)
            for crop in range(2):
                self.memory[crop, indices] = distributed.gather(z[crop]).to(self.memory.dtype)
            self._step_embeddings = None

    @torch.no_grad()
    def prototype_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """One-hot nearest centroid of the first head: the cluster k-means would assign."""
        nearest = (self.project(images) @ self.centroids[0].T).argmax(dim=1)
        return nn.functional.one_hot(nearest, self.centroids.shape[1]).float()

    @torch.no_grad()
    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z_x, z_y = self.project(x), self.project(y)
        energies = [
            -torch.log_softmax(z_x @ centroids.T / self.temperature, dim=1).gather(1, (z_y @ centroids.T).argmax(dim=1, keepdim=True))
            for centroids in self.centroids
        ]
        return torch.cat(energies, dim=1).mean(dim=1)
