"""The evaluation protocol shared by every method, so that result tables compare.

DESIGN.md, "Evaluation protocol": kNN with cosine similarity and ``exp(s / 0.07)`` votes at
k = 20 and k = 200 (Wu et al. 2018; DINO, Caron et al. 2021), a linear probe (multinomial
logistic regression on frozen features, test top-1), and few-shot logistic regression
from 1, 10 and 100 labels per class (mean and spread over 5 seeds). Raw pixels are the
baseline printed beside every result (:func:`raw_pixel_features`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfsup.evaluate._common import check_same_dim, check_split
from selfsup.evaluate.fewshot import fewshot_accuracy
from selfsup.evaluate.knn import knn_accuracies
from selfsup.evaluate.linear import linear_probe_accuracy

__all__ = ["FEWSHOT_SHOTS", "accuracy_metrics", "raw_pixel_features", "split_accuracy_metrics"]

FEWSHOT_SHOTS = (1, 10, 100)


def accuracy_metrics(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    seeds: int = 5,
) -> dict:
    """Every label-based metric of the protocol on frozen features, with default settings.

    Args:
        train_x, train_y: ``[N, D]`` training features and ``[N]`` labels.
        test_x, test_y: ``[M, D]`` test features and ``[M]`` labels.
        num_classes: number of classes.
        seeds: number of few-shot draws per shot count.

    Returns:
        ``{"knn_top1", "knn200_top1", "linear_top1": float, "fewshot": {"1", "10", "100":
        mean}, "fewshot_std": {"1", "10", "100": std}}``, accuracies as fractions in
        ``[0, 1]``. Shot counts above the smallest class size are still reported; those
        classes then use all their examples.
    """
    check_split("train", train_x, train_y, num_classes)
    check_split("test", test_x, test_y, num_classes)
    check_same_dim(train_x, test_x)
    fewshot = fewshot_accuracy(train_x, train_y, test_x, test_y, num_classes, shots=FEWSHOT_SHOTS, seeds=seeds)
    knn = knn_accuracies(train_x, train_y, test_x, test_y, num_classes, ks=(20, 200))
    return {
        "knn_top1": knn[20],
        "knn200_top1": knn[200],
        "linear_top1": linear_probe_accuracy(train_x, train_y, test_x, test_y, num_classes),
        "fewshot": {shots: result["mean"] for shots, result in fewshot.items()},
        "fewshot_std": {shots: result["std"] for shots, result in fewshot.items()},
    }


def split_accuracy_metrics(train_x: Tensor, train_split, test_x: Tensor, test_split, seeds: int = 5) -> dict:
    """:func:`accuracy_metrics` of features computed from two labelled splits (anything with
    ``labels`` and ``num_classes``: images, documents, clips); the class count also covers
    labels above ``num_classes`` (folders whose test split has classes of its own)."""
    num_classes = max(train_split.num_classes, int(train_split.labels.max()) + 1)
    return accuracy_metrics(train_x, train_split.labels, test_x, test_split.labels, num_classes, seeds=seeds)


def raw_pixel_features(images_uint8: Tensor) -> Tensor:
    """Flatten ``[N, C, H, W]`` uint8 images to ``[N, C*H*W]`` float32 features in ``[0, 1]``.

    The raw-pixel baseline printed beside every result (DESIGN.md).
    """
    if not isinstance(images_uint8, Tensor):
        raise TypeError(f"images_uint8 must be a torch.Tensor, got {type(images_uint8).__name__}")
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"images_uint8 must have dtype uint8, got {images_uint8.dtype}")
    if images_uint8.ndim != 4:
        raise ValueError(f"images_uint8 must be [N, C, H, W], got shape {tuple(images_uint8.shape)}")
    return images_uint8.reshape(images_uint8.shape[0], -1).to(torch.float32).div_(255.0)
