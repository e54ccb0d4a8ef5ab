"""The supervised reference: the same backbone trained with every label for the same
wall-clock budget, so that a benchmark can say what share of supervised accuracy
self-supervision reaches.

It is fine-tuning (:func:`selfsup.evaluate.finetune.fit_classifier`: cross-entropy through a
linear head, AdamW, crop-and-flip views at the evaluation size, warm-up then cosine) of an
encoder at random initialisation on the whole labelled training split, its schedule fitted
to the budget as a pretraining run's is (:class:`~selfsup.train.budget.BudgetPlanner`).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from selfsup.augment.views import ViewMaker
from selfsup.data import ImageSet
from selfsup.evaluate.finetune import classifier_accuracy, fit_classifier
from selfsup.train.budget import BudgetPlanner

__all__ = ["supervised_accuracy"]


def supervised_accuracy(encoder: nn.Module, feature_dim: int, train: ImageSet, test: ImageSet, view_maker: ViewMaker,
                        seconds: float, seed: int, device: torch.device, batch_size: int = 64) -> dict[str, float]:
    """Train a copy of ``encoder`` and a linear head on every labelled image of ``train``
    for ``seconds`` of wall-clock time; returns the top-1 accuracy on ``test`` (read through
    the evaluation view), the steps and epochs taken and the seconds spent training."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    torch.manual_seed(seed)
    model, head = copy.deepcopy(encoder).to(device).train(), nn.Linear(feature_dim, train.num_classes).to(device)
    steps_per_epoch = -(-len(train) // batch_size)
    planner = BudgetPlanner(seconds, planned_steps=None, provisional_steps=steps_per_epoch)
    started = time.perf_counter()
    steps = fit_classifier(model, head, train.images, train.labels, view_maker, planner, seed, device, batch_size,
                           desc=f"supervised, {seconds:.0f} s")
    trained = time.perf_counter() - started
    return {"top1": classifier_accuracy(model, head, test, view_maker, device), "steps": steps,
            "epochs": round(steps / steps_per_epoch, 3), "seconds": round(trained, 2)}
