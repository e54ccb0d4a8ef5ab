"""End-to-end fine-tuning on a few labels per class: the judge masked-image models need.

Frozen-feature probes (kNN, linear, few-shot) read the features as they are; pixel-predicting
methods such as MAE learn features that are strong after fine-tuning but weaker frozen (He
et al. 2022, section 4.3: linear probing and fine-tuning disagree). ``finetune_accuracy``
trains a copy of the encoder and a linear head on ``labels_per_class`` labelled images per
class and reports top-1 accuracy on the whole test split, for any image method.

Protocol (chosen for small label budgets on a CPU, after MAE's fine-tuning recipe,
main_finetune.py, without its mixup, cutmix, label smoothing and layer-wise decay, which
assume ImageNet-scale labels): AdamW with weight decay 0.05, learning rate 1e-2 for the head
and 1e-3 for the encoder (not scaled by the batch: a few hundred steps on a few hundred
images, where MAE's per-256 rates barely move the head: on digits, 10 per class, 50 epochs,
3e-3 / 3e-4 gave 40% against 74% for these), 10% linear warm-up then cosine decay; views are random resized crops (scale 0.5-1) with horizontal flips; the test
split is read through the run's evaluation view. The labelled images are drawn as the
few-shot probe draws them (:func:`~selfsup.evaluate.fewshot.fewshot_indices`), so seed s
fine-tunes on the images the s-th few-shot draw probes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from selfsup.augment.views import ViewMaker, ViewRecipe, seeded_generator
from selfsup.data import ImageSet
from selfsup.evaluate.fewshot import fewshot_indices

__all__ = ["FINETUNE_RECIPE", "FixedSteps", "StepPlan", "classifier_accuracy", "finetune_accuracy", "fit_classifier"]

#: The fine-tuning views: crop and flip, no colour change.
FINETUNE_RECIPE = ViewRecipe(global_crops=1, global_scale=(0.5, 1.0), jitter_p=0.0, grayscale_p=0.0)
_HEAD_LR, _ENCODER_LR, _WEIGHT_DECAY, _WARMUP = 1e-2, 1e-3, 0.05, 0.1


def finetune_accuracy(encoder: nn.Module, feature_dim: int, train: ImageSet, test: ImageSet, view_maker: ViewMaker,
                      labels_per_class: int, epochs: int, seed: int, device: torch.device, batch_size: int = 64) -> float:
    """Top-1 accuracy on ``test`` of a copy of ``encoder`` (images -> [B, feature_dim]) and a
    linear head, trained end to end on ``labels_per_class`` images per class of ``train``
    for ``epochs`` passes (see the module docstring). ``view_maker`` gives the run's
    normalisation and evaluation view; ``encoder`` itself is left unchanged."""
    if labels_per_class < 1 or epochs < 1:
        raise ValueError(f"labels_per_class and epochs must be at least 1, got {labels_per_class} and {epochs}")
    chosen = fewshot_indices(train.labels, train.num_classes, labels_per_class, seed)
    images, labels = train.images[chosen], train.labels[chosen]
    batch_size = min(batch_size, len(images))
    torch.manual_seed(seed)
    model, head = copy.deepcopy(encoder).to(device).train(), nn.Linear(feature_dim, train.num_classes).to(device)
    fit_classifier(model, head, images, labels, view_maker, FixedSteps(epochs * math.ceil(len(images) / batch_size)), seed, device,
                   batch_size, desc=f"fine-tuning on {labels_per_class} per class")
    return classifier_accuracy(model, head, test, view_maker, device)


class StepPlan(Protocol):
    """How long :func:`fit_classifier` trains: ``total_steps`` (may be refined by
    ``after_step``, as a wall-clock budget is once the step time is measured) unless the
    budget is spent first."""

    @property
    def total_steps(self) -> int: ...

    def budget_spent(self) -> bool: ...

    def after_step(self, step: int) -> object: ...  # what the plan did, unused here


@dataclasses.dataclass
class FixedSteps:
    """A plan of a known number of steps."""

    total_steps: int

    def budget_spent(self) -> bool:
        return False

    def after_step(self, step: int) -> None:
        return None


def fit_classifier(model: nn.Module, head: nn.Module, images: torch.Tensor, labels: torch.Tensor, view_maker: ViewMaker,
                   plan: StepPlan, seed: int, device: torch.device, batch_size: int, desc: str) -> int:
    """Train ``model`` and ``head`` together with cross-entropy on ``images`` (in passes,
    each in a seeded random order) seen through :data:`FINETUNE_RECIPE` views at the
    evaluation size, AdamW with a linear warm-up then cosine decay over the plan's steps;
    returns the steps taken."""
    recipe = dataclasses.replace(FINETUNE_RECIPE, global_size=view_maker.eval_size)
    augment = ViewMaker(recipe, view_maker.mean, view_maker.std)
    optimizer = torch.optim.AdamW([{"params": model.parameters(), "lr": _ENCODER_LR},
                                   {"params": head.parameters(), "lr": _HEAD_LR}], weight_decay=_WEIGHT_DECAY)
    base_rates = [group["lr"] for group in optimizer.param_groups]
    order_generator = torch.Generator().manual_seed(seed)
    step = 0
    with tqdm(desc=desc, unit="step", leave=False, disable=None) as progress:
        while step < plan.total_steps and not plan.budget_spent():
            order = torch.randperm(len(images), generator=order_generator)
            for start in range(0, len(images), batch_size):
                if step >= plan.total_steps or plan.budget_spent():
                    break
                total = plan.total_steps
                warmup = max(1, round(_WARMUP * total))
                factor = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
                for group, rate in zip(optimizer.param_groups, base_rates, strict=True):
                    group["lr"] = rate * factor
                rows = order[start : start + batch_size]
                views = augment(images[rows].to(device), seeded_generator(seed, step, device))[0]
                loss = F.cross_entropy(head(model(views)), labels[rows].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                plan.after_step(step)
                progress.update()
    return step


def classifier_accuracy(model: nn.Module, head: nn.Module, test: ImageSet, view_maker: ViewMaker, device: torch.device,
                        batch_size: int = 512) -> float:
    """Top-1 accuracy of ``head(model(x))`` on ``test`` read through the evaluation view."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test), batch_size):
            views = view_maker.eval_view(test.images[start : start + batch_size].to(device))
            correct += int((head(model(views)).argmax(dim=1).cpu() == test.labels[start : start + batch_size]).sum())
    return correct / len(test)
