"""Weighted k-nearest-neighbour classification on frozen features.

The protocol of Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination" (CVPR 2018), as used by DINO (Caron et al., "Emerging Properties in
Self-Supervised Vision Transformers", ICCV 2021, ``eval_knn.py``) and by solo-learn:

1. L2-normalise train and test features; similarity is the cosine ``s = <x, x_i>``.
2. Take the ``k`` most similar training samples (k = 20 and 200 in the selfsup tables).
3. Each neighbour votes for its label with weight ``exp(s_i / T)``, ``T = 0.07``.
4. Predict the class with the largest summed vote.

Test rows are processed in chunks so memory stays ``O(chunk_size * num_train)``: with the
default chunk of 1024 rows and 60,000 training samples one chunk's similarity matrix is
about 250 MB in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.evaluate._common import (
    check_features,
    check_labels,
    check_same_dim,
    float_dtype,
)

__all__ = ["knn_accuracies", "knn_accuracy", "knn_predict", "knn_predict_many"]


@torch.no_grad()
def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> Tensor:
    """Predict test labels by a similarity-weighted vote of the ``k`` nearest training samples.

    Cosine similarity on L2-normalised features; neighbour ``i`` votes with weight
    ``exp(s_i / temperature)`` for its label (Wu et al. 2018; DINO's ``eval_knn.py``).
    Ties in the summed vote go to the smallest class index.

    Args:
        train_features: ``[N, D]`` features of the labelled (training) samples.
        train_labels: ``[N]`` integer labels in ``[0, num_classes)``.
        test_features: ``[M, D]`` features to classify.
        num_classes: number of classes.
        k: number of neighbours; capped at ``N``.
        temperature: temperature of the vote weights (0.07 in the DINO protocol).
        chunk_size: test rows per chunk; bounds memory to ``chunk_size x N`` similarities.
            It does not change the result.

    Returns:
        ``[M]`` int64 predicted labels.
    """
    return knn_predict_many(train_features, train_labels, test_features, num_classes, (k,), temperature, chunk_size)[k]


@torch.no_grad()
def knn_predict_many(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    num_classes: int,
    ks: tuple[int, ...] = (20, 200),
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> dict[int, Tensor]:
    """:func:`knn_predict` for several ``k`` at once: one similarity matrix and one top-k
    per chunk, each ``k`` voting with the first ``k`` of the largest one's sorted neighbours."""
    check_features("train_features", train_features)
    check_features("test_features", test_features)
    check_same_dim(train_features, test_features)
    check_labels("train_labels", train_labels, train_features.shape[0], num_classes)
    if train_features.shape[0] == 0:
        raise ValueError("train_features is empty: kNN needs at least one labelled sample")
    if not ks or min(ks) < 1:
        raise ValueError(f"k must be >= 1, got {ks}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    dtype = float_dtype(train_features)
    train = F.normalize(train_features.to(dtype), dim=1)
    train_labels = train_labels.to(device=train.device, dtype=torch.int64)
    largest = min(max(ks), train.shape[0])

    predictions: dict[int, list[Tensor]] = {k: [] for k in ks}
    for test_chunk in test_features.split(chunk_size):
        similarity = F.normalize(test_chunk.to(dtype), dim=1) @ train.T  # [chunk, N]
        top_similarity, top_index = similarity.topk(largest, dim=1)  # sorted, most similar first
        # Shifting by each row's largest similarity rescales that row's votes by a positive
        # constant (argmax unchanged) and keeps exp() finite for any temperature.
        weights = ((top_similarity - top_similarity[:, :1]) / temperature).exp_()
        neighbour_labels = train_labels[top_index]
        for k in ks:
            used = min(k, largest)
            votes = weights.new_zeros(test_chunk.shape[0], num_classes)
            votes.scatter_add_(1, neighbour_labels[:, :used], weights[:, :used])
            predictions[k].append(votes.argmax(dim=1))
    empty = torch.empty(0, dtype=torch.int64, device=train.device)
    return {k: torch.cat(chunks) if chunks else empty for k, chunks in predictions.items()}


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> float:
    """Top-1 accuracy (fraction in ``[0, 1]``) of :func:`knn_predict` on ``test_labels``."""
    return knn_accuracies(train_features, train_labels, test_features, test_labels, num_classes, (k,), temperature, chunk_size)[k]


def knn_accuracies(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    ks: tuple[int, ...] = (20, 200),
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> dict[int, float]:
    """:func:`knn_accuracy` for each of ``ks``, from one pass over the similarities."""
    check_features("test_features", test_features)
    check_labels("test_labels", test_labels, test_features.shape[0], num_classes)
    if test_features.shape[0] == 0:
        raise ValueError("test_features is empty: accuracy is undefined")
    predictions = knn_predict_many(train_features, train_labels, test_features, num_classes, ks, temperature, chunk_size)
    truth = test_labels.to(torch.int64)
    return {k: float((predicted == truth).double().mean()) for k, predicted in predictions.items()}
