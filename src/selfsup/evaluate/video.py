"""Evaluation of models of continuations: energies of true and wrong futures, best-of-K
prediction error and sample diversity, probes and collapse of the encoder's features.

A model here has ``energy(past, future) -> [B]`` and ``embed(past) -> [B, D]``; models with
a decoder also have ``sample_futures(past, samples, generator) -> [B, K, T, C, H, W]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from selfsup.augment.clips import ClipViews
from selfsup.data.sequences import ClipSet, reversed_future, shifted_future
from selfsup.energy import energy_auc
from selfsup.evaluate.collapse import collapse_report
from selfsup.evaluate.protocol import raw_pixel_features, split_accuracy_metrics

BEST_OF = (1, 5, 20)
_BATCH = 128


def _batched(function: Callable[..., Tensor], views: ClipViews, clips: Tensor, device: torch.device) -> Tensor:
    """``function(past, future)`` over batches of uint8 clips [N, T, C, H, W], made into
    views by the run's view maker; results concatenated on the CPU."""
    return torch.cat([
        function(*views(clips[start : start + _BATCH].to(device))).float().cpu() for start in range(0, len(clips), _BATCH)
    ])


@torch.no_grad()
def continuation_energy_auc(model, views: ClipViews, clips: ClipSet, device: torch.device, shift: int = 4) -> dict[str, float]:
    """P(F(x, true continuation) < F(x, wrong one)) for three kinds of wrong continuation:
    ``other_clip`` (the next clip's future, rolled by one), ``reversed`` (the true future
    played backwards) and ``shifted`` (the true future moved ``shift`` pixels down and
    right)."""
    true = _batched(model.energy, views, clips.frames, device)
    wrong = {
        "other_clip": clips.future.roll(1, dims=0),
        "reversed": reversed_future(clips),
        "shifted": shifted_future(clips, (shift, shift)),
    }
    return {
        name: energy_auc(true, _batched(model.energy, views, torch.cat([clips.past, future], dim=1), device))
        for name, future in wrong.items()
    }


def futures_quality(futures: Tensor, future: Tensor, samples: tuple[int, ...] = BEST_OF) -> tuple[dict[int, Tensor], Tensor]:
    """Per clip, from sampled futures [B, K, T, C, H, W] and the true future [B, T, C, H, W]:
    for each k in ``samples``, the smallest per-pixel squared error among the first k samples
    [B] (it can only fall with k), and the diversity [B]: the mean squared difference per
    pixel between two of the K samples, over all pairs."""
    errors = (futures - future.unsqueeze(1)).pow(2).flatten(2).mean(dim=2)  # [B, K]
    best = {k: errors[:, :k].min(dim=1).values for k in samples}
    count = futures.shape[1]
    flat = futures.flatten(2)
    # Mean over pairs i != j of ||s_i - s_j||^2 / n, from the per-sample variance:
    # sum_{i,j} ||s_i - s_j||^2 = 2 K sum_i ||s_i - mean||^2.
    spread = (flat - flat.mean(dim=1, keepdim=True)).pow(2).sum(dim=(1, 2)) / flat.shape[2]
    diversity = 2 * spread / (count - 1) if count > 1 else torch.zeros(len(flat), device=flat.device)
    return best, diversity


@torch.no_grad()
def best_of_k(model, views: ClipViews, clips: ClipSet, device: torch.device, samples: tuple[int, ...] = BEST_OF,
              seed: int = 0) -> dict:
    """:func:`futures_quality` of ``max(samples)`` futures sampled for every clip, averaged
    over the clips: ``{"best_of_k": {"k": error}, "sample_diversity": float}``."""
    generator = torch.Generator(device=device).manual_seed(seed)
    best: dict[int, list[Tensor]] = {k: [] for k in samples}
    diversity = []
    for start in range(0, len(clips), _BATCH):
        past, future = views(clips.frames[start : start + _BATCH].to(device))
        batch_best, batch_diversity = futures_quality(model.sample_futures(past, max(samples), generator).float(), future, samples)
        for k in samples:
            best[k].append(batch_best[k].cpu())
        diversity.append(batch_diversity.cpu())
    return {
        "best_of_k": {str(k): float(torch.cat(best[k]).mean()) for k in samples},
        "sample_diversity": float(torch.cat(diversity).mean()),
    }


@torch.no_grad()
def encode_clips(model, views: ClipViews, clips: ClipSet, device: torch.device) -> Tensor:
    """The encoder's features of the past frames of every clip [N, D]."""
    return torch.cat([
        model.embed(views.eval_view(clips.frames[start : start + _BATCH].to(device))).float().cpu()
        for start in range(0, len(clips), _BATCH)
    ])


def evaluate_video(model, views: ClipViews, train: ClipSet, test: ClipSet, device: torch.device, fewshot_seeds: int = 5,
                   random_init=None, raw_pixels: bool = True) -> dict:
    """The video part of ``summary.json``: ``energy_auc`` (other clip's future) and
    ``energy_auc_by_negative`` (other clip, reversed, shifted), ``best_of_k`` and
    ``sample_diversity`` (models with a decoder), probes of the encoder's features on the
    sprite class, their ``collapse`` diagnostics (models without a decoder), and ``baselines``: the same model at
    random initialisation and the raw pixels of the last past frame."""
    model.eval()
    aucs = continuation_energy_auc(model, views, test, device)
    result: dict = {"energy_auc": aucs["other_clip"], "energy_auc_by_negative": aucs}
    if model.samples_futures:
        result.update(best_of_k(model, views, test, device))
    train_x, test_x = encode_clips(model, views, train, device), encode_clips(model, views, test, device)
    result.update(split_accuracy_metrics(train_x, train, test_x, test, fewshot_seeds))
    if not model.samples_futures:
        # An energy measured between embeddings (JEPA) is zero for all pairs if the encoder
        # collapses; an energy measured in pixels cannot collapse that way, and a predictor's
        # features may well be low-rank without harm, so only the former is diagnosed.
        result["collapse"] = collapse_report(test_x)
    baselines = {}
    if random_init is not None:
        random_init.to(device).eval()
        baselines["random_init"] = split_accuracy_metrics(encode_clips(random_init, views, train, device), train,
                                                          encode_clips(random_init, views, test, device), test, fewshot_seeds)
    if raw_pixels:
        baselines["raw_pixels"] = split_accuracy_metrics(raw_pixel_features(train.past[:, -1]), train,
                                                         raw_pixel_features(test.past[:, -1]), test, fewshot_seeds)
    if baselines:
        result["baselines"] = baselines
    return result
