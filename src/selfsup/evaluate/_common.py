"""Helpers shared by the evaluation functions: input checks (so every one fails the same
clear way) and the floating-point type computations run in."""

from __future__ import annotations

import torch
from torch import Tensor


def check_features(name: str, features: Tensor) -> None:
    """Require a real 2-D ``[N, D]`` tensor."""
    if not isinstance(features, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if features.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(features.shape)}")
    if features.is_complex():
        raise TypeError(f"{name} must be real-valued, got {features.dtype}")


def check_labels(name: str, labels: Tensor, num_rows: int, num_classes: int) -> None:
    """Require ``[num_rows]`` integer labels in ``[0, num_classes)``."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.shape != (num_rows,):
        raise ValueError(f"{name} must have shape [{num_rows}], got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got {labels.dtype}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if num_rows and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes - 1}] (num_classes={num_classes}), "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )


def check_split(split: str, features: Tensor, labels: Tensor, num_classes: int) -> None:
    """Check a non-empty labelled split: ``{split}_x`` features and ``{split}_y`` labels."""
    check_features(f"{split} features", features)
    if features.shape[0] == 0:
        raise ValueError(f"{split} features are empty")
    check_labels(f"{split} labels", labels, features.shape[0], num_classes)


def check_same_dim(train: Tensor, test: Tensor) -> None:
    """Require train and test features of the same width."""
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train features have {train.shape[1]} dimensions but test features have {test.shape[1]}")


def float_dtype(tensor: Tensor) -> torch.dtype:
    """float64 for float64 input, float32 for everything else (half, bfloat16, integers)."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32
